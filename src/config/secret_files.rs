//! The `_FILE` twins of the secret settings (`CD_ADMIN_TOKEN_FILE`…), so
//! that secrets can come from Docker/compose secrets instead of the
//! environment. Read once at start, before the settings are validated.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::{invalid, Settings, SettingsError};

/// One secret setting, its `_FILE` twin, and where both landed in [`Settings`].
struct SecretSlot<'a> {
    setting: &'static str,
    file_setting: &'static str,
    value: &'a mut Option<SecretString>,
    file: Option<&'a Path>,
}

fn slot<'a>(
    setting: &'static str,
    file_setting: &'static str,
    value: &'a mut Option<SecretString>,
    file: &'a Option<PathBuf>,
) -> SecretSlot<'a> {
    SecretSlot {
        setting,
        file_setting,
        value,
        file: file.as_deref(),
    }
}

impl Settings {
    /// Every secret setting with a `_FILE` twin; a new secret is one line here.
    fn secret_slots(&mut self) -> [SecretSlot<'_>; 6] {
        [
            slot(
                "CD_ADMIN_TOKEN",
                "CD_ADMIN_TOKEN_FILE",
                &mut self.admin_token,
                &self.admin_token_file,
            ),
            slot(
                "CD_VIEWER_TOKEN",
                "CD_VIEWER_TOKEN_FILE",
                &mut self.viewer_token,
                &self.viewer_token_file,
            ),
            slot(
                "CD_SIGNING_KEY",
                "CD_SIGNING_KEY_FILE",
                &mut self.signing_key,
                &self.signing_key_file,
            ),
            slot(
                "CD_REDIS_URL",
                "CD_REDIS_URL_FILE",
                &mut self.redis_url,
                &self.redis_url_file,
            ),
            slot(
                "CD_REDIS_PASSWORD",
                "CD_REDIS_PASSWORD_FILE",
                &mut self.redis_password,
                &self.redis_password_file,
            ),
            slot(
                "CD_REGISTRY_PASSWORD",
                "CD_REGISTRY_PASSWORD_FILE",
                &mut self.registry_password,
                &self.registry_password_file,
            ),
        ]
    }

    /// Fills each secret whose `_FILE` twin is set from that file, before
    /// [`Settings::validate`] (`enac_cd::run` does). A secret set both ways
    /// is refused: neither may silently win.
    pub fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        for slot in self.secret_slots() {
            let Some(path) = slot.file else {
                continue;
            };
            if slot.value.is_some() {
                return Err(invalid(
                    slot.file_setting,
                    format!(
                        "{} and {} are both set; set one",
                        slot.setting, slot.file_setting
                    ),
                ));
            }
            *slot.value = Some(read_secret_file(slot.file_setting, path)?);
        }
        Ok(())
    }
}

/// The setting to name in an error about a secret: its `_FILE` twin when
/// the value came from a file.
pub(super) fn source_of(
    setting: &'static str,
    file_setting: &'static str,
    file: &Option<PathBuf>,
) -> &'static str {
    if file.is_some() {
        file_setting
    } else {
        setting
    }
}

/// The file's content minus one trailing newline (`echo` and `openssl rand`
/// end with one). Errors name the setting and the path, never the content.
fn read_secret_file(setting: &'static str, path: &Path) -> Result<SecretString, SettingsError> {
    let mut text = std::fs::read_to_string(path).map_err(|error| {
        invalid(
            setting,
            format!("cannot read `{}`: {error}", path.display()),
        )
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(invalid(setting, format!("`{}` is empty", path.display())));
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn read(content: &[u8]) -> Result<String, SettingsError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, content).expect("secret written");
        read_secret_file("CD_ADMIN_TOKEN_FILE", &path).map(|secret| secret.expose_secret().into())
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(read(b"a/b+c=\n").expect("read"), "a/b+c=");
        assert_eq!(read(b"a/b+c=\r\n").expect("read"), "a/b+c=");
        assert_eq!(read(b"a/b+c=").expect("read"), "a/b+c=");
        assert_eq!(read(b"two\n\n").expect("read"), "two\n");
        assert_eq!(read(b" spaced \n").expect("read"), " spaced ");
    }

    #[test]
    fn an_empty_secret_is_refused_naming_setting_and_path() {
        for content in [&b""[..], b"\n", b"\r\n"] {
            let error = read(content).expect_err("empty secret accepted");
            assert_eq!(error.setting, "CD_ADMIN_TOKEN_FILE");
            assert!(error.reason.contains("is empty"), "{error}");
        }
    }

    #[test]
    fn an_unreadable_file_is_refused_without_its_content() {
        let error = read_secret_file("CD_SIGNING_KEY_FILE", Path::new("/nonexistent/key"))
            .expect_err("missing file accepted");
        assert_eq!(error.setting, "CD_SIGNING_KEY_FILE");
        assert!(error.reason.contains("/nonexistent/key"), "{error}");
        let error = read(b"\xff\xfenot-utf8-secret").expect_err("binary secret accepted");
        assert!(!error.to_string().contains("not-utf8-secret"), "{error}");
    }
}
