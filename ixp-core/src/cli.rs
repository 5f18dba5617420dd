//! The command line of an ixp binary (feature `cli`): what `ixp-app` runs.
//!
//! ```text
//! ixp-app [run]   [--config F]   serve until SIGINT/SIGTERM (the default)
//! ixp-app check   [--config F]   run every start-up check; print the plan or every problem
//! ixp-app plugins                list the compiled-in plugins
//! ixp-app schema                 print the JSON Schema of the config file
//! ixp-app graph   [--mermaid] [--config F]   print the dependency graph (DOT or Mermaid)
//! ```
//!
//! The config file is `--config`, else `$IXP_CONFIG`, else `ixp.toml` in the working
//! directory if there is one, else the embedded defaults (every compiled-in plugin with
//! its default config). An app's `main` is one line:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     ixp_core::cli::main()
//! }
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigLoader, IxpConfig};
use crate::http::IxpServer;
use crate::plan::check;
use crate::registry::Catalog;

/// The command line.
#[derive(Debug, Parser)]
#[command(version, about = "An IXP server composed of compile-time plugins")]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the config comes from.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct ConfigArg {
    /// Config file (TOML, or JSON by extension). Default: $IXP_CONFIG, else ./ixp.toml
    /// if present, else the embedded defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the plugins and serve HTTP until SIGINT or SIGTERM.
    Run(ConfigArg),
    /// Run every start-up check and print the plan, or every problem (exit status 1).
    Check(ConfigArg),
    /// List the compiled-in plugins.
    Plugins,
    /// Print the JSON Schema of the config file.
    Schema,
    /// Print the plugin dependency graph as Graphviz DOT.
    Graph {
        /// Print Mermaid instead of DOT.
        #[arg(long)]
        mermaid: bool,
        /// Where the config comes from (disabled plugins are greyed out).
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Parses the process arguments and runs the command; the exit code to return.
pub fn main() -> ExitCode {
    run_cli(Cli::parse(), Catalog::linked())
}

/// Runs `cli` over the plugins of `catalog`.
pub fn run_cli(cli: Cli, catalog: Catalog) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Run(ConfigArg::default()));
    match command {
        Command::Run(arg) => run(arg, catalog),
        Command::Check(arg) => match load(&arg) {
            Ok(config) => check_command(&catalog, &config),
            Err(message) => fail(&message),
        },
        Command::Plugins => {
            print!("{}", plugins_table(&catalog));
            ExitCode::SUCCESS
        }
        Command::Schema => {
            let schema = crate::schema::config_file_schema(&catalog);
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot print the schema: {e}")),
            }
        }
        Command::Graph { mermaid, config } => match load(&config) {
            Ok(config) => {
                print!("{}", graph(&catalog, &config, mermaid));
                ExitCode::SUCCESS
            }
            Err(message) => fail(&message),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The config file `arg` designates (see the module docs), loaded.
pub fn load(arg: &ConfigArg) -> Result<IxpConfig, String> {
    let path = arg
        .config
        .clone()
        .or_else(|| std::env::var_os("IXP_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let local = PathBuf::from("ixp.toml");
            local.is_file().then_some(local)
        });
    let loader = match path {
        Some(path) => ConfigLoader::new().file(path),
        None => ConfigLoader::new(),
    };
    loader.load().map_err(|e| e.to_string())
}

fn check_command(catalog: &Catalog, config: &IxpConfig) -> ExitCode {
    match check(catalog, config) {
        Ok(plan) => {
            let source = config
                .file()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded defaults".into());
            println!(
                "ok: {} plugin(s) planned from {source} (profile {})",
                plan.plugins().len(),
                config.profile()
            );
            println!("start order:");
            for entry in plan.entries() {
                let after = if entry.starts_after.is_empty() {
                    String::new()
                } else {
                    format!(" (after {})", entry.starts_after.join(", "))
                };
                println!(
                    "  {}. {} {}{after}",
                    entry.position, entry.name, entry.version
                );
                let config = serde_json::to_string(&entry.config).unwrap_or_default();
                println!("     config: {config}");
            }
            if !plan.disabled().is_empty() {
                println!("disabled: {}", plan.disabled().join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(report) => {
            eprintln!("{report}");
            ExitCode::FAILURE
        }
    }
}

/// The table `ixp-app plugins` prints: one row per compiled-in plugin, columns as wide
/// as their longest cell.
pub fn plugins_table(catalog: &Catalog) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "FEATURE".to_owned(),
        "DEPENDENCIES".to_owned(),
    ]];
    for registration in catalog.registrations() {
        let meta = registration.metadata();
        let mut deps: Vec<String> = meta.dependencies.iter().map(|d| (*d).to_owned()).collect();
        deps.extend(
            meta.optional_dependencies
                .iter()
                .map(|d| format!("{d} (optional)")),
        );
        let deps = if deps.is_empty() {
            "-".into()
        } else {
            deps.join(", ")
        };
        rows.push([
            meta.name.to_owned(),
            meta.version.to_owned(),
            meta.feature.unwrap_or("(application)").to_owned(),
            deps,
        ]);
    }
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name, version, feature) = (width(0), width(1), width(2));
    let mut out = String::new();
    for [n, v, f, d] in &rows {
        let _ = writeln!(out, "{n:<name$}  {v:<version$}  {f:<feature$}  {d}");
    }
    out
}

/// The dependency graph of the compiled-in plugins: required edges solid, optional ones
/// dashed, plugins disabled by `config` greyed out. Edges point from a plugin to what it
/// depends on.
pub fn graph(catalog: &Catalog, config: &IxpConfig, mermaid: bool) -> String {
    let mut out = String::new();
    let registrations = catalog.registrations();
    let dep_name = |text: &str| text.split_whitespace().next().unwrap_or(text).to_owned();
    if mermaid {
        out.push_str("graph TD\n");
        for (i, r) in registrations.iter().enumerate() {
            let meta = r.metadata();
            let _ = writeln!(out, "    p{i}[\"{} {}\"]", meta.name, meta.version);
            if !config.enables(&meta) {
                let _ = writeln!(out, "    style p{i} stroke-dasharray: 5 5,color:#999");
            }
        }
        let id = |name: &str| registrations.iter().position(|r| r.metadata().name == name);
        for (i, r) in registrations.iter().enumerate() {
            let meta = r.metadata();
            for (text, arrow) in meta
                .dependencies
                .iter()
                .map(|d| (d, "-->"))
                .chain(meta.optional_dependencies.iter().map(|d| (d, "-.->")))
            {
                let name = dep_name(text);
                match id(&name) {
                    Some(j) => {
                        let _ = writeln!(out, "    p{i} {arrow} p{j}");
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "    p{i} {arrow} missing_{}[\"{name} (not compiled in)\"]",
                            name.replace('-', "_")
                        );
                    }
                }
            }
        }
    } else {
        out.push_str("digraph plugins {\n    rankdir=LR;\n    node [shape=box];\n");
        for r in registrations {
            let meta = r.metadata();
            let style = if config.enables(&meta) {
                ""
            } else {
                ", style=dashed, fontcolor=gray"
            };
            let _ = writeln!(
                out,
                "    \"{}\" [label=\"{}\\n{}\"{style}];",
                meta.name, meta.name, meta.version
            );
        }
        for r in registrations {
            let meta = r.metadata();
            for dep in meta.dependencies {
                let _ = writeln!(out, "    \"{}\" -> \"{}\";", meta.name, dep_name(dep));
            }
            for dep in meta.optional_dependencies {
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\" [style=dashed];",
                    meta.name,
                    dep_name(dep)
                );
            }
        }
        out.push_str("}\n");
    }
    out
}

fn run(arg: ConfigArg, catalog: Catalog) -> ExitCode {
    init_tracing();
    let config = match load(&arg) {
        Ok(config) => config,
        Err(message) => return fail(&message),
    };
    let server = match IxpServer::builder().catalog(catalog).config(config).build() {
        Ok(server) => server,
        Err(report) => return fail(&report.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(server.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Installs ixp's process-wide subscriber with console output (filter from `RUST_LOG`,
/// default `info`); a logging plugin replaces the output later.
fn init_tracing() {
    let _ = crate::telemetry::install(
        crate::telemetry::console_layer(),
        crate::telemetry::default_filter(),
    );
}
