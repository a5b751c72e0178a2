//! The `--config` TOML file: its keys become flags placed before the ones on
//! the command line, and only when the setting's env twin is unset, so that
//! the precedence is file < env < flag with clap doing every parse.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Command};

use super::{invalid, Settings, SettingsError};
use crate::auth::oidc::{Issuer, IssuerFile};

/// Returns `args` (the `serve` arguments, without the program name) with the
/// config file's settings inserted in front of them.
pub fn merge_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, SettingsError> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|error| {
        invalid(
            "CD_CONFIG",
            format!("cannot read `{}`: {error}", path.display()),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        invalid(
            "CD_CONFIG",
            format!(
                "`{}` is not valid TOML: {}",
                path.display(),
                error.message()
            ),
        )
    })?;
    let command = Settings::augment_args(Command::new("serve"));
    let mut merged = Vec::new();
    // `[github]` and `[gitlab]` keys are the settings named after them:
    // `[github] app_id` is `github_app_id` (`CD_GITHUB_APP_ID`).
    let mut entries: Vec<(String, &toml::Value)> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) if key == "github" || key == "gitlab" => {
                entries.extend(
                    section
                        .iter()
                        .map(|(inner, value)| (format!("{key}_{inner}"), value)),
                );
            }
            _ => entries.push((key.clone(), value)),
        }
    }
    for (key, value) in &entries {
        let (key, value) = (key.as_str(), *value);
        // `[[issuer]]` is read by `issuers_from`; a misspelt section must not
        // be dropped silently.
        if key == "issuer" && is_array_of_tables(value) {
            continue;
        }
        if value.is_table() || is_array_of_tables(value) {
            return Err(invalid(
                "CD_CONFIG",
                format!("`{}`: unknown section `[{key}]`", path.display()),
            ));
        }
        let flag = key
            .to_ascii_lowercase()
            .trim_start_matches("cd_")
            .replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag.as_str()) && flag != "config")
        else {
            return Err(invalid(
                "CD_CONFIG",
                format!("`{}`: unknown setting `{key}`", path.display()),
            ));
        };
        let env_is_set = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if env_is_set {
            continue;
        }
        let value = scalar_text(value).ok_or_else(|| {
            invalid(
                "CD_CONFIG",
                format!(
                    "`{}`: `{key}` must be a string, number, boolean or list of them",
                    path.display()
                ),
            )
        })?;
        merged.push(OsString::from(format!("--{flag}={value}")));
    }
    merged.extend(args);
    Ok(merged)
}

/// The `[[issuer]]` entries of the config file at `path`, validated.
pub fn issuers_from(path: Option<&std::path::Path>) -> Result<Vec<Issuer>, SettingsError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| invalid("CD_CONFIG", format!("`{}`: {reason}", path.display()));
    let text =
        std::fs::read_to_string(path).map_err(|error| bad(format!("cannot read: {error}")))?;
    #[derive(serde::Deserialize)]
    struct Issuers {
        #[serde(default)]
        issuer: Vec<IssuerFile>,
    }
    // Only the issuer section matters here; the other keys were checked as flags.
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| bad(error.message().to_owned()))?;
    let issuers_only: toml::Table = table
        .into_iter()
        .filter(|(key, _)| key == "issuer")
        .collect();
    let parsed: Issuers = issuers_only
        .try_into()
        .map_err(|error: toml::de::Error| bad(format!("[[issuer]]: {}", error.message())))?;
    let mut issuers: Vec<Issuer> = Vec::new();
    for raw in parsed.issuer {
        let issuer = Issuer::from_file(raw).map_err(bad)?;
        if issuers.iter().any(|seen| seen.name == issuer.name) {
            return Err(bad(format!("issuer `{}` is defined twice", issuer.name)));
        }
        issuers.push(issuer);
    }
    Ok(issuers)
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    let mut found = None;
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            found = iter.next().map(PathBuf::from);
        } else if let Some(path) = text.strip_prefix("--config=") {
            found = Some(PathBuf::from(path));
        }
    }
    found.or_else(|| std::env::var_os("CD_CONFIG").map(PathBuf::from))
}

fn is_array_of_tables(value: &toml::Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| !items.is_empty() && items.iter().all(toml::Value::is_table))
}

fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(scalar_text)
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_file(content: &str, args: &[&str]) -> Result<Vec<String>, SettingsError> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content.as_bytes()).expect("write config");
        let mut full = vec![format!("--config={}", file.path().display())];
        full.extend(args.iter().map(|arg| arg.to_string()));
        merge_config_file(full.into_iter().map(OsString::from).collect()).map(|args| {
            args.into_iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn file_keys_come_before_command_line_flags() {
        let args = with_file(
            "redis_prefix = \"from-file:\"\nCD_MAX_OUTPUT = \"2MiB\"\n",
            &["--redis-prefix=from-flag:"],
        )
        .expect("valid file");
        let file_flag = args.iter().position(|a| a == "--redis-prefix=from-file:");
        let cli_flag = args.iter().position(|a| a == "--redis-prefix=from-flag:");
        assert!(file_flag < cli_flag, "{args:?}");
        assert!(args.contains(&"--max-output=2MiB".to_string()));
    }

    #[test]
    fn secret_files_are_settings_like_any_other() {
        let args = with_file(
            "admin_token_file = \"/run/secrets/admin\"\nCD_REDIS_PASSWORD_FILE = \"/run/secrets/redis\"\n",
            &[],
        )
        .expect("valid file");
        assert!(args.contains(&"--admin-token-file=/run/secrets/admin".to_string()));
        assert!(args.contains(&"--redis-password-file=/run/secrets/redis".to_string()));
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = with_file("no_such_setting = 1\n", &[]).expect_err("unknown key accepted");
        assert_eq!(error.setting, "CD_CONFIG");
        assert!(error.reason.contains("no_such_setting"), "{error}");
    }

    #[test]
    fn unknown_sections_are_named() {
        let error =
            with_file("[isuer]\nname = \"x\"\n", &[]).expect_err("unknown section accepted");
        assert!(error.reason.contains("[isuer]"), "{error}");
    }

    #[test]
    fn broken_toml_is_refused() {
        let error = with_file("listen = \n", &[]).expect_err("broken TOML accepted");
        assert!(error.reason.contains("not valid TOML"), "{error}");
    }
}
