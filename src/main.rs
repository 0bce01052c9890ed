//! The `pgcat` command: `pgcat [CONFIG]` runs the pooler, `--check` validates a config
//! without connecting anywhere, `pgcat demo` runs it in front of a throwaway local
//! PostgreSQL. Flags follow PgCat's so scripts written for PgCat keep working.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc: its size classes are naturally aligned, so tokio's cache-line-aligned task
/// and socket records cost no padding (glibc's memalign left ~400 bytes of gaps per idle
/// client), and it holds no per-block header (BENCHMARKS.md, memory per idle client).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "pgcat",
    version,
    about = "PostgreSQL pooler and proxy (a drop-in for PgCat)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Configuration file.
    #[arg(env = "CONFIG_FILE", default_value = "pgcat.toml")]
    config: PathBuf,
    /// Parse and validate the configuration, then exit (never connects).
    #[arg(long)]
    check: bool,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(short = 'l', long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(short = 'F', long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Disable colours in logs.
    #[arg(short = 'n', long)]
    no_color: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a throwaway local PostgreSQL (primary + replica, three shard databases) and
    /// run the pooler in front of it on 127.0.0.1; Ctrl-C stops and removes everything.
    Demo {
        /// Port the pooler listens on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Structured,
    Debug,
    Json,
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!cli.no_color && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Structured | LogFormat::Json => builder.json().init(),
        LogFormat::Debug => builder.pretty().init(),
    }
}

/// Raises the open-file limit to its hard limit: every client and server connection is a
/// file descriptor. Says so when even that is below what `max_client_conn` needs.
fn raise_open_files(max_client_conn: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
            limit.rlim_cur = limit.rlim_max;
        }
    }
    // A client needs its socket, and usually a server connection too.
    let needed = (max_client_conn as u64)
        .saturating_mul(2)
        .saturating_add(100);
    if limit.rlim_cur < needed {
        tracing::warn!(
            "the open-file limit ({}) is below the {needed} descriptors that max_client_conn = {max_client_conn} can need (a socket per client plus, at worst, a server connection per client, and 100 spare): raise the limit (ulimit -n, LimitNOFILE=) or lower max_client_conn",
            limit.rlim_cur
        );
    }
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    if let Some(Command::Demo { port }) = cli.command {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let result = runtime(threads)
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(pgcat::demo::run(port)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgcat demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let loaded = match pgcat::config::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pgcat: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{}: {warning}", cli.config.display());
    }
    if cli.check {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    raise_open_files(loaded.config.general.max_client_conn);
    let result = runtime(loaded.config.general.worker_threads).and_then(|rt| {
        let served = rt.block_on(pgcat::runtime::serve(loaded.config));
        // Clients were drained (or cut off) by `serve`; what is left must not hold the
        // exit: a blocking task (a DNS lookup that hangs) or a worker busy in a poll.
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgcat: {e}");
            ExitCode::FAILURE
        }
    }
}
