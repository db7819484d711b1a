//! `keystead-cli`: a custom front-end acting as a device of the example
//! server, plus login, TOTP enrolment and token display.
//!
//! ```sh
//! cargo run --example cli -- --server http://127.0.0.1:8080 login --realm acme --username alice
//! cargo run --example cli -- device register --group <groupId> --name laptop
//! cargo run --example cli -- device activate --group <groupId>            # first device: starts the key
//! cargo run --example cli -- device activate --group <groupId> --device <pending device>
//! cargo run --example cli -- device key --group <groupId>
//! cargo run --example cli -- totp enroll
//! ```
//!
//! Files live in `--home` (default `~/.keystead-cli`), owner-only: the
//! session and one X25519 secret key per group. Passwords and the admin
//! token are read from the environment (`KEYSTEAD_PASSWORD`,
//! `KEYSTEAD_ADMIN_TOKEN`) or from standard input, never from arguments
//! (which other users can see in the process list).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use keystead::id::{DeviceId, GroupId};
use keystead::secret::SecretString;
use keystead_examples::cli::{AdminAuth, Cli, CliError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "keystead-cli",
    about = "A device front-end for the keystead example server"
)]
struct Args {
    /// The server's base URL.
    #[arg(long, env = "KEYSTEAD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Where the session and device keys are kept (default ~/.keystead-cli).
    #[arg(long, env = "KEYSTEAD_CLI_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in with a password (realm token endpoint); password from
    /// KEYSTEAD_PASSWORD or standard input.
    Login {
        /// The realm's name.
        #[arg(long)]
        realm: String,
        /// The username.
        #[arg(long)]
        username: String,
        /// The OAuth client id to log in as.
        #[arg(long, default_value = "keystead-cli")]
        client_id: String,
    },
    /// The saved access token.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// TOTP second factor.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
    /// This machine as a device of a group.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print the saved token's claims (decoded, not verified) and time left.
    Show,
}

#[derive(Debug, Subcommand)]
enum TotpCommand {
    /// Create a TOTP key: prints its otpauth URI and a QR code to scan.
    /// Password from KEYSTEAD_PASSWORD or standard input.
    Enroll {
        /// The MFA key type id of TOTP on the server.
        #[arg(long, default_value_t = 1)]
        type_id: u32,
    },
    /// Activate a pending TOTP key with a code from the authenticator.
    Activate {
        /// The key id `enroll` printed.
        #[arg(long)]
        key_id: String,
        /// The current 6-digit code.
        #[arg(long)]
        code: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register this machine (new X25519 key pair; the secret stays here).
    Register {
        #[arg(long)]
        group: GroupId,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "cli")]
        platform: String,
    },
    /// Activate a pending device by sealing the group key to it; without
    /// --device, start the group key on this (first) device.
    Activate {
        #[arg(long)]
        group: GroupId,
        #[arg(long)]
        device: Option<DeviceId>,
    },
    /// Fetch and open this device's group key; prints its version and
    /// fingerprint (--reveal prints the key).
    Key {
        #[arg(long)]
        group: GroupId,
        #[arg(long)]
        reveal: bool,
    },
    /// Ask the group's active devices for the key.
    Request {
        #[arg(long)]
        group: GroupId,
    },
    /// List pending key requests, or grant one with --request.
    Grant {
        #[arg(long)]
        group: GroupId,
        #[arg(long)]
        request: Option<String>,
    },
    /// Rotate the group key (administrator: KEYSTEAD_ADMIN_TOKEN), optionally
    /// revoking a device in the same commit.
    Rotate {
        #[arg(long)]
        group: GroupId,
        /// The realm's name.
        #[arg(long)]
        realm: String,
        #[arg(long)]
        revoke: Option<DeviceId>,
    },
}

/// A secret from the environment, else one line of standard input.
fn secret_input(var: &str, prompt: &str) -> Result<SecretString, CliError> {
    if let Ok(value) = std::env::var(var) {
        return Ok(SecretString::new(value));
    }
    eprint!("{prompt}: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| CliError::File {
            path: "<stdin>".into(),
            source,
        })?;
    let value = SecretString::new(line.trim_end_matches(['\r', '\n']).to_owned());
    zeroize::Zeroize::zeroize(&mut line);
    Ok(value)
}

async fn run(args: Args) -> Result<(), CliError> {
    let home = match args.home {
        Some(home) => home,
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".keystead-cli"))
            .ok_or_else(|| CliError::Usage("no HOME: pass --home".into()))?,
    };
    let cli = Cli::new(&args.server, home)?;
    match args.command {
        Command::Login {
            realm,
            username,
            client_id,
        } => {
            let password = secret_input("KEYSTEAD_PASSWORD", "password")?;
            cli.login(&realm, &username, &password, &client_id).await?;
            println!("logged in to {realm} as {username}");
        }
        Command::Token {
            command: TokenCommand::Show,
        } => {
            let info = cli.token_show()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&info.claims).unwrap_or_default()
            );
            if info.expires_in > 0 {
                println!(
                    "expires in {} s (not verified here: the server verifies)",
                    info.expires_in
                );
            } else {
                println!("expired {} s ago: log in again", -info.expires_in);
            }
        }
        Command::Totp {
            command: TotpCommand::Enroll { type_id },
        } => {
            let password = secret_input("KEYSTEAD_PASSWORD", "password")?;
            let enrolment = cli.totp_enroll(&password, type_id).await?;
            println!("{}", enrolment.qr);
            println!("{}", enrolment.otpauth);
            println!(
                "scan it, then: keystead-cli totp activate --key-id {} --code <code>",
                enrolment.key_id
            );
        }
        Command::Totp {
            command: TotpCommand::Activate { key_id, code },
        } => {
            cli.totp_activate(&key_id, &code).await?;
            println!("TOTP key {key_id} is active");
        }
        Command::Device { command } => device(&cli, command).await?,
    }
    Ok(())
}

async fn device(cli: &Cli, command: DeviceCommand) -> Result<(), CliError> {
    match command {
        DeviceCommand::Register {
            group,
            name,
            platform,
        } => {
            let device = cli.device_register(group, &name, &platform).await?;
            println!("registered device {} ({}), pending", device.id, device.name);
        }
        DeviceCommand::Activate { group, device } => {
            let device = cli.device_activate(group, device).await?;
            println!(
                "device {} is {} with key version {}",
                device.id,
                device.status.as_str(),
                device.key_version.unwrap_or_default()
            );
        }
        DeviceCommand::Key { group, reveal } => {
            use base64::Engine as _;
            let opened = cli.device_key(group).await?;
            println!(
                "key version {} fingerprint {}",
                opened.version,
                opened.fingerprint()
            );
            if reveal {
                println!(
                    "{}",
                    base64::engine::general_purpose::STANDARD.encode(opened.key.expose())
                );
            }
        }
        DeviceCommand::Request { group } => {
            let request = cli.device_request(group).await?;
            println!("key request {} is {}", request.id, request.status.as_str());
        }
        DeviceCommand::Grant {
            group,
            request: None,
        } => {
            for r in cli.key_requests(group).await? {
                println!(
                    "{} from device {} (version {})",
                    r.id, r.device_id, r.key_version
                );
            }
        }
        DeviceCommand::Grant {
            group,
            request: Some(request),
        } => {
            cli.device_grant(group, &request).await?;
            println!("granted {request}");
        }
        DeviceCommand::Rotate {
            group,
            realm,
            revoke,
        } => {
            let token = secret_input("KEYSTEAD_ADMIN_TOKEN", "admin token")?;
            let result = cli
                .device_rotate(group, &AdminAuth { token, realm }, revoke)
                .await?;
            println!("{result}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
