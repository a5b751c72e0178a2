use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enac_cd::client::{deploy, DeployArgs};
use enac_cd::config::{merge_config_file, Settings};

#[derive(Parser)]
#[command(name = "enac-cd", version, about = "Continuous-deployment broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    #[command(args_override_self = true)]
    Serve(Box<Settings>),
    /// Deploy an app and follow its job until it ends.
    Deploy(DeployArgs),
}

/// Bad settings stop the start with one line naming the setting.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn arguments() -> Result<Vec<OsString>, enac_cd::config::SettingsError> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|command| command == "serve") {
        let rest = args.split_off(2);
        args.extend(merge_config_file(rest)?);
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match arguments() {
        Ok(args) => args,
        Err(error) => return fail(error),
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            return fail(line.trim_start_matches("error: "));
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the runtime: {error}")),
    };
    match cli.command {
        Command::Serve(settings) => {
            enac_cd::telemetry::init(settings.log_format);
            match runtime.block_on(enac_cd::run(*settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            }
        }
        Command::Deploy(args) => {
            let code = runtime.block_on(deploy(args));
            ExitCode::from(code as u8)
        }
    }
}
