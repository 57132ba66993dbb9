//! The `sluice` command: parse the CLI, load the config, run the daemon, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice::config::Config;
use tokio_util::sync::CancellationToken;

/// Every event is an allocation made on a listener's thread and freed on an output's thread;
/// mimalloc's per-thread free lists make that cheaper than glibc's arenas (issue 8).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid configuration (sysexits.h EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code for a command line that names something the configuration lacks (as clap's usage
/// errors).
const EXIT_USAGE: u8 = 2;

/// A syslog receiver and router: RFC 5424/3164 over UDP, TCP, TLS and unix sockets and from
/// /dev/kmsg, routed by rules to files, stdout and forwarders.
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

    /// Read log files (one message per line, any format sluice parses), write the baseline of
    /// their traffic (events per minute, error ratio, message templates) as JSON to --output,
    /// and exit. A `kind = "baseline"` alert rule compares the stream against it.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["check_config", "config"])]
    learn_baseline: Vec<PathBuf>,

    /// With --learn-baseline: where the baseline is written.
    #[arg(long, short = 'o', value_name = "PATH", requires = "learn_baseline")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let activation = sluice::systemd::Activation::take_from_env();
    // SAFETY: first thing in main, while the process has a single thread.
    unsafe { sluice::sys::process::remove_env_vars(&sluice::systemd::ENV_VARS) };
    // Before the allocator's arenas fill: see the function. Best effort (an old kernel lacks it).
    let _ = sluice::sys::disable_transparent_huge_pages();
    let cli = Cli::parse();
    init_tracing();
    if !cli.learn_baseline.is_empty() {
        return learn_baseline(&cli.learn_baseline, cli.output.as_deref());
    }
    // The daemon and --check-config load alike: the same config is accepted or refused (78).
    let config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = check_as_run_as(&config);
    if code != 0 {
        return ExitCode::from(code);
    }
    if cli.check_config {
        if let Some(w) = sluice::limits::descriptor_warning(&config) {
            eprintln!("warning: {w}");
        }
        return match &cli.explain {
            Some(sample) => explain(&config, sample, cli.listener.as_deref()),
            None => {
                println!(
                    "config OK: {} ({} listeners, {} outputs, {} routes)",
                    config.origin,
                    config.listeners.len(),
                    config.outputs.len(),
                    config.routes.len()
                );
                ExitCode::SUCCESS
            }
        };
    }
    match run(config, activation, cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// When sluice is started as root and `[daemon] user` is set, checks the environment again as
/// that user (an unwritable log directory is an error). Returns the exit status.
fn check_as_run_as(config: &Config) -> u8 {
    let Some(run_as) = &config.daemon.run_as else {
        return 0;
    };
    if !sluice::sys::is_root() {
        return 0;
    }
    let report = || {
        let check = config.check_environment();
        for e in &check.errors {
            eprintln!("{e} (as {run_as})");
        }
        if check.errors.is_empty() {
            0
        } else {
            EXIT_CONFIG
        }
    };
    let in_child = || sluice::privileges::check_as(run_as, report);
    // SAFETY: no thread has been started yet.
    match unsafe { sluice::sys::process::run_in_child(in_child) } {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: checking as {run_as}: {e}");
            1
        }
    }
}

/// Prints the explanation of each sample (`-`: each line of stdin).
/// `--learn-baseline FILE... --output PATH`.
fn learn_baseline(files: &[PathBuf], output: Option<&std::path::Path>) -> ExitCode {
    let Some(output) = output else {
        eprintln!("--learn-baseline needs --output PATH: where to write the baseline");
        return ExitCode::from(EXIT_USAGE);
    };
    let learnt =
        sluice::alert::baseline::Baseline::learn(files).and_then(|b| b.save(output).map(|()| b));
    match learnt {
        Ok(b) => {
            println!(
                "baseline written to {}: {} events over {:.0} s, {:.2} events/min, error ratio {:.4}, {} patterns",
                output.display(),
                b.events,
                b.span_seconds,
                b.events_per_minute,
                b.error_ratio,
                b.patterns.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice --learn-baseline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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

/// Reads and validates the config, and checks what it needs from the machine; the error
/// text lists every problem. Warnings (certificates about to expire) are printed.
fn load(path: Option<&std::path::Path>) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(Config::embedded_default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    let (config, warnings) =
        Config::load(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(config)
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

fn run(
    config: Config,
    activation: sluice::systemd::Activation,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    raise_descriptor_limit(&config);
    // Bind before the runtime starts, so privileges could be dropped between the two.
    let bound = sluice::daemon::bind_activated(&config, activation).context("binding listeners")?;
    if let Some(run_as) = &config.daemon.run_as {
        sluice::privileges::drop_to(run_as)
            .with_context(|| format!("dropping privileges to {run_as}"))?;
        tracing::info!(user = %run_as.user, uid = run_as.uid, gid = run_as.gid, "dropped privileges");
        // Checked as the new user: what it cannot write now, it would fail on later, per event.
        let check = config.check_environment();
        let errors: Vec<String> = check.errors.iter().map(ToString::to_string).collect();
        anyhow::ensure!(
            errors.is_empty(),
            "after dropping to {run_as}: {}",
            errors.join("; ")
        );
    }
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
        tokio::spawn(watch_signals(
            signals,
            bound.control(),
            config_path,
            shutdown.clone(),
        ));
        sluice::daemon::run(config, bound, shutdown).await
    })
}

/// Raises the soft descriptor limit to the hard one before anything is bound (a default soft
/// limit of 1024 is used up by 1000 idle connections), logs it, and warns when the
/// configuration could need more.
fn raise_descriptor_limit(config: &Config) {
    match sluice::limits::raise_nofile_limit() {
        Ok(was) => tracing::info!(
            limit = was.hard,
            was = was.soft,
            "descriptor limit (RLIMIT_NOFILE) set to the hard limit"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the descriptor limit (RLIMIT_NOFILE)")
        }
    }
    if let Some(w) = sluice::limits::descriptor_warning(config) {
        tracing::warn!("{w}");
    }
}

/// Re-reads the config file; applies it if valid, else logs every error and keeps running.
async fn reload(control: &sluice::daemon::Control, path: &std::path::Path) {
    let config = match load(Some(path)) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.lines() {
                tracing::error!(error = e, "configuration reload refused");
            }
            return;
        }
    };
    // The daemon logs the outcome.
    let _ = control.reload(config).await;
}

/// First SIGTERM/SIGINT: orderly shutdown. A second one: exit at once. SIGHUP: file outputs
/// reopen their files (after logrotate moved them), TLS listeners reload their certificates,
/// and the configuration file is read again.
async fn watch_signals(
    (mut term, mut int, mut hup): (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    ),
    control: sluice::daemon::Control,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    let mut signalled = false;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening files, reloading TLS certificates and the configuration");
                control.hangup().signal();
                if let Some(path) = &config_path {
                    reload(&control, path).await;
                }
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
