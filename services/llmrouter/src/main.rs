//! The `llmrouter` command: parses the command line, loads the configuration, installs
//! telemetry, and runs the chosen services (see the library for how they are assembled).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llmrouter::Role;

/// An OpenAI-compatible LLM gateway. One binary runs every service of the cluster.
#[derive(Parser)]
#[command(name = "llmrouter", version, about, long_about = None)]
struct Cli {
    /// A TOML, YAML or JSON file layered over the built-in default configuration.
    /// Environment variables LLMR__SECTION__KEY override both.
    #[arg(long, short, global = true, env = "LLMR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every service in one process (in-memory bus and store unless redis.url is set).
    All,
    /// The HTTP front (needs Redis).
    Gateway,
    /// The router: resolves models and plans attempts (needs Redis).
    Router,
    /// A provider worker for one pool (needs Redis).
    Worker {
        /// The pool whose jobs (jobs:{pool}) this worker runs.
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// Loads and validates the configuration, prints what it found, and exits
    /// (non-zero, naming the field, when something is wrong).
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match llmr_config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
            return ExitCode::from(2);
        }
    };
    let role = match cli.command {
        Command::CheckConfig => {
            let _ = write!(std::io::stdout(), "configuration is valid\n{}", settings.summary());
            return ExitCode::SUCCESS;
        }
        Command::All => Role::All,
        Command::Gateway => Role::Gateway,
        Command::Router => Role::Router,
        Command::Worker { pool } => Role::Worker { pool },
    };
    let outcome = actix_rt::System::new().block_on(async move {
        let telemetry = llmr_telemetry::init(&settings.telemetry, role.name()).map_err(|e| e.to_string())?;
        let result = match llmrouter::start(&role, &settings).await {
            Ok(app) => {
                app.run_until_stopped().await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        // Flushing spans blocks: do it off the actix thread.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        result
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
            ExitCode::FAILURE
        }
    }
}
