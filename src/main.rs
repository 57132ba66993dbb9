//! The `sluice` command: parse the CLI, load the config, run the daemon, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice::config::Config;
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid configuration (sysexits.h EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code for a command line that names something the configuration lacks (as clap's usage
/// errors).
const EXIT_USAGE: u8 = 2;

/// A syslog receiver and router: RFC 5424/3164 over UDP, TCP and unix sockets, routed by rules
/// to files and stdout.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, sluice runs its embedded default: UDP and TCP on
    /// 127.0.0.1:5514, every message to stdout.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,

    /// Validate the configuration, print every error at once, and exit (0 if valid, 78 if not).
    #[arg(long)]
    check_config: bool,

    /// With --check-config: show what sluice would do with MESSAGE (the parsed event, each
    /// route's verdict and why, the outputs reached). `-` reads one message per line from stdin.
    #[arg(long, value_name = "MESSAGE", requires = "check_config")]
    explain: Option<String>,

    /// With --explain: the listener the message arrives on (default: the first by name).
    #[arg(long, value_name = "NAME", requires = "explain")]
    listener: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        let check = config.check_environment();
        for w in &check.warnings {
            eprintln!("warning: {w}");
        }
        if !check.errors.is_empty() {
            for e in check.errors {
                eprintln!("{e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
        if let Some(sample) = &cli.explain {
            return explain(&config, sample, cli.listener.as_deref());
        }
        println!(
            "config OK: {} ({} listeners, {} outputs, {} routes)",
            config.origin,
            config.listeners.len(),
            config.outputs.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the explanation of each sample (`-`: each line of stdin).
fn explain(config: &Config, sample: &str, listener: Option<&str>) -> ExitCode {
    let found = match listener {
        Some(n) => config.listeners.iter().find(|l| &*l.name == n),
        None => config.listeners.first(),
    };
    let Some(listener) = found else {
        let names: Vec<&str> = config.listeners.iter().map(|l| &*l.name).collect();
        eprintln!(
            "--listener: no listener named {:?} (defined: {})",
            listener.unwrap_or_default(),
            names.join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    };
    if sample != "-" {
        print!(
            "{}",
            sluice::explain::explain(config, listener, sample.as_bytes())
        );
        return ExitCode::SUCCESS;
    }
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        match std::io::BufRead::read_until(&mut stdin, b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("--explain -: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        }
        let sample = line.strip_suffix(b"\n").unwrap_or(&line);
        if sample.is_empty() {
            continue;
        }
        if !first {
            println!();
        }
        first = false;
        print!("{}", sluice::explain::explain(config, listener, sample));
    }
}

/// Reads and validates the config; the error text lists every problem.
fn load(path: Option<&std::path::Path>) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(Config::embedded_default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    Config::from_toml_str(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

fn init_tracing() {
    // sluice's own log goes to stderr, never into its own pipeline or onto the stdout output.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(config: Config) -> anyhow::Result<()> {
    // Bind before the runtime starts, so privileges could be dropped between the two.
    let bound = sluice::daemon::bind(&config).context("binding listeners")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before any socket is served, so an early SIGTERM is never the default
        // (immediate) death.
        let signals = (
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(signals, bound.hangup(), shutdown.clone()));
        sluice::daemon::run(config, bound, shutdown).await
    })
}

/// First SIGTERM/SIGINT: orderly shutdown. A second one: exit at once. SIGHUP: file outputs
/// reopen their files (after logrotate moved them), TLS listeners reload their certificates.
async fn watch_signals(
    (mut term, mut int, mut hup): (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    ),
    hangup: sluice::daemon::Hangup,
    shutdown: CancellationToken,
) {
    let mut signalled = false;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening files, reloading TLS certificates");
                hangup.signal();
                continue;
            }
        };
        if signalled {
            tracing::warn!(signal = name, "second signal: exiting at once");
            std::process::exit(1);
        }
        signalled = true;
        tracing::info!(signal = name, "stopping");
        shutdown.cancel();
    }
}
