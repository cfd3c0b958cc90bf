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
    /// The MCP tools service: JavaScript tools, built-ins, remote MCP servers (needs Redis).
    McpTools,
    /// The responses service: OpenAI's Responses API over chat completions (needs Redis).
    Responses,
    /// Loads and validates the configuration, prints what it found, and exits
    /// (non-zero, naming the field, when something is wrong).
    CheckConfig,
    /// Calls a tool on a running gateway: `llmrouter tool calculator '{"expression":"2+3"}'`.
    Tool {
        /// The tool's name.
        name: String,
        /// Its arguments, a JSON object (default `{}`).
        args: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Runs a JavaScript file on a running gateway (the execute_code tool); ARGS become the
    /// script's `args` (one JSON value, or the words as strings).
    Script {
        file: PathBuf,
        args: Vec<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Manages virtual keys through a running gateway's admin API (--admin-token or
    /// LLMR_ADMIN_TOKEN): `llmrouter keys create --name ci --rpm 60 --budget-usd 5`,
    /// `keys list [--json]`, `keys show ID`, `keys revoke ID`, `keys rotate ID`.
    Keys {
        #[command(subcommand)]
        command: llmrouter::admin_cli::KeysCommand,
        #[command(flatten)]
        target: llmrouter::admin_cli::AdminTarget,
    },
    /// Prints spend from a running gateway's admin API as a table (or --json):
    /// `llmrouter spend --group-by team --from 2025-06-01 --to 2025-06-30`.
    Spend {
        #[command(flatten)]
        args: llmrouter::admin_cli::SpendArgs,
        #[command(flatten)]
        target: llmrouter::admin_cli::AdminTarget,
    },
    /// Probes this container's own service (a Docker HEALTHCHECK): GET /readyz (or /healthz
    /// with --live) on the admin port, else on the server port; exits 0 on 200.
    Healthcheck {
        /// Ask whether the process is alive, not whether it is ready.
        #[arg(long)]
        live: bool,
    },
    /// Turns a LiteLLM proxy config (model_list, router_settings…) into llmrouter TOML on
    /// stdout; what could not be mapped is listed as comments at its top (and on stderr).
    ImportLitellm {
        /// The LiteLLM config (YAML or JSON).
        file: PathBuf,
    },
    /// A sandboxed script host process (started by llmrouter itself).
    #[command(hide = true)]
    ScriptHost,
}

#[derive(clap::Args)]
struct TargetArgs {
    /// The gateway's URL.
    #[arg(long, env = "LLMR_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token (server.token of the gateway).
    #[arg(long, env = "LLMR_TOKEN")]
    token: Option<String>,
    /// Print the JSON-RPC exchange on stderr.
    #[arg(short, long)]
    verbose: bool,
}

impl TargetArgs {
    fn target(self) -> llmrouter::cli::Target {
        llmrouter::cli::Target {
            server: self.server,
            token: self.token.filter(|t| !t.is_empty()),
            verbose: self.verbose,
        }
    }
}

/// Runs a client verb and prints its answer.
fn client(target: TargetArgs, name: String, args: Result<serde_json::Value, llmrouter::cli::CliError>) -> ExitCode {
    let outcome =
        args.map(|args| actix_rt::System::new().block_on(llmrouter::cli::call_tool(&target.target(), &name, args)));
    report(outcome.and_then(|r| r))
}

/// Prints a client verb's answer on stdout, or its error on stderr (exit 1).
fn report(outcome: Result<String, llmrouter::cli::CliError>) -> ExitCode {
    match outcome {
        Ok(text) => {
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `import-litellm`: the TOML on stdout, what was not mapped as comments above it.
fn import_litellm(file: &std::path::Path) -> ExitCode {
    match llmr_config::import::litellm_file(file) {
        Ok(out) => {
            let mut text = format!("# Imported from {} by `llmrouter import-litellm`.\n", file.display());
            for u in &out.unmapped {
                text.push_str(&format!("# not mapped: {u}\n"));
                let _ = writeln!(std::io::stderr(), "not mapped: {u}");
            }
            text.push('\n');
            text.push_str(&out.toml);
            let _ = write!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a verb that needs no configuration (the client verbs, the script host); gives the
/// command back when it names a role or a verb that reads the configuration.
fn without_config(command: Command) -> Result<ExitCode, Box<Command>> {
    Ok(match command {
        Command::ScriptHost => llmr_script::host_main(),
        Command::Tool { name, args, target } => {
            let args = llmrouter::cli::tool_args(args.as_deref());
            client(target, name, args)
        }
        Command::ImportLitellm { file } => import_litellm(&file),
        Command::Keys { command, target } => {
            report(actix_rt::System::new().block_on(llmrouter::admin_cli::keys(&target, command)))
        }
        Command::Spend { args, target } => {
            report(actix_rt::System::new().block_on(llmrouter::admin_cli::spend(&target, &args)))
        }
        Command::Script { file, args, target } => {
            let code = std::fs::read_to_string(&file)
                .map_err(|e| llmrouter::cli::CliError::Usage(format!("cannot read {}: {e}", file.display())));
            let args = code.map(|code| serde_json::json!({"code": code, "args": llmrouter::cli::script_args(&args)}));
            client(target, "execute_code".into(), args)
        }
        other => return Err(Box::new(other)),
    })
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.command = match without_config(cli.command) {
        Ok(code) => return code,
        Err(command) => *command,
    };
    let settings = match llmr_config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
            return ExitCode::from(2);
        }
    };
    let role = match cli.command {
        Command::Healthcheck { live } => {
            let path = if live { "/healthz" } else { "/readyz" };
            let probed = actix_rt::System::new().block_on(llmrouter::cli::healthcheck(&settings, path));
            return match probed {
                Ok(url) => {
                    let _ = writeln!(std::io::stdout(), "{url}: ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "llmrouter: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::CheckConfig => {
            let _ = write!(std::io::stdout(), "configuration is valid\n{}", settings.summary());
            return ExitCode::SUCCESS;
        }
        Command::All => Role::All,
        Command::Gateway => Role::Gateway,
        Command::Router => Role::Router,
        Command::Worker { pool } => Role::Worker { pool },
        Command::McpTools => Role::McpTools,
        Command::Responses => Role::Responses,
        Command::Tool { .. }
        | Command::Script { .. }
        | Command::ScriptHost
        | Command::ImportLitellm { .. }
        | Command::Keys { .. }
        | Command::Spend { .. } => {
            return ExitCode::FAILURE;
        }
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
