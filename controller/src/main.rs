//! `sluice`: the controller, and the entry point of every Sluice process.
//!
//! Run as `sluice [-c CONFIG]` it is the controller: it reads the config, starts one listener
//! process per protocol (restarting any that dies within a second), starts a buffer process
//! per stream when a stream is first published or played, answers connectors on its Unix
//! socket, and serves the JSON API on `config.controller` (127.0.0.1:4242).
//! The same binary runs the other processes: `sluice buffer …` and `sluice connector …`.

mod api;
mod auth;
mod config;
mod control;
mod logs;
mod state;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Sluice streaming media server")]
struct Cli {
    /// Config file (MistServer layout); written with defaults when missing.
    #[arg(short = 'c', long = "config", default_value = "sluice.json")]
    config: PathBuf,
    /// Folder for the Unix sockets between processes (default: a private folder under /tmp
    /// named after the API port).
    #[arg(long)]
    rundir: Option<PathBuf>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Run a stream's buffer (started by the controller).
    #[command(hide = true)]
    Buffer(buffer::BufferArgs),
    /// Pull a stream from a camera into its buffer (started by the buffer).
    #[command(hide = true)]
    Pull(connectors::rtsp_pull::PullArgs),
    /// Push a stream to another server over RTSP (started by the controller's pushes).
    #[command(hide = true)]
    Push(connectors::rtsp_push::PushArgs),
    /// Run a protocol listener (started by the controller).
    #[command(hide = true)]
    Connector {
        /// RTMP or HTTP.
        protocol: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        interface: String,
        #[arg(long)]
        rundir: PathBuf,
        /// Stream played when a client names none (TS).
        #[arg(long)]
        stream: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.role {
        Some(Role::Buffer(args)) => {
            connectors::listener::set_process_name("buffer");
            buffer::run(args)
        }
        Some(Role::Pull(args)) => {
            connectors::listener::set_process_name("RTSP pull");
            connectors::rtsp_pull::run(args)
        }
        Some(Role::Push(args)) => {
            connectors::listener::set_process_name("RTSP push");
            connectors::rtsp_push::run(args)
        }
        Some(Role::Connector {
            protocol,
            port,
            interface,
            rundir,
            stream,
        }) => run_connector(&protocol, port, &interface, rundir, stream),
        None => run_controller(cli.config, cli.rundir),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

fn run_connector(
    protocol: &str,
    port: u16,
    interface: &str,
    rundir: PathBuf,
    stream: Option<String>,
) -> Result<()> {
    let ctx = connectors::Ctx {
        rundir,
        default_stream: stream,
    };
    match protocol {
        "RTMP" => {
            connectors::listener::serve("RTMP", interface, port, ctx, connectors::rtmp::handle)
        }
        "HTTP" => {
            connectors::listener::serve("HTTP", interface, port, ctx, connectors::http::handle)
        }
        "TS" => connectors::listener::serve("TS", interface, port, ctx, connectors::ts::handle),
        "RTSP" => {
            connectors::listener::serve("RTSP", interface, port, ctx, connectors::rtsp::handle)
        }
        other => anyhow::bail!("unknown connector {other}"),
    }
}

static HUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

/// SIGHUP reloads the config (as `config_reload`).
fn install_hup_handler() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_hup),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = sigaction(Signal::SIGHUP, &act);
    }
}

fn run_controller(config_path: PathBuf, rundir: Option<PathBuf>) -> Result<()> {
    let cfg = config::load_or_create(&config_path)?;
    let (api_iface, api_port) = config::api_addr(&cfg);
    if let Some(l) = cfg.pointer("/config/log_level").and_then(|v| v.as_str()) {
        logs::set_level(l);
    }
    let rundir = match rundir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "sluice-{}-{api_port}",
            nix::unistd::getuid().as_raw()
        )),
    };
    state::prepare_rundir(&rundir)?;
    // Every process Sluice starts stays in this process group, so stopping the group stops
    // all of it.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    let term = buffer::install_term_handler();
    let st = Arc::new(Mutex::new(state::State::new(
        cfg,
        config_path,
        rundir.clone(),
    )?));
    // The API port first: a second Sluice with the same config fails here, before it could
    // touch the first one's sockets.
    api::start(st.clone(), &api_iface, api_port)?;
    // Segments cached by an earlier server in this folder are not served again.
    connectors::segcache::clear(&rundir)
        .with_context(|| format!("clearing the segment cache in {}", rundir.display()))?;
    control::start(st.clone())?;
    crate::logs::controller(&format!(
        "API on http://{api_iface}:{api_port}/api, sockets in {}",
        rundir.display()
    ));
    install_hup_handler();
    while !term.load(Ordering::SeqCst) {
        if HUP.swap(false, Ordering::SeqCst) {
            let mut g = st.lock().expect("state lock");
            let path = g.config_path().to_path_buf();
            match config::load_or_create(&path) {
                Ok(v) => {
                    let old = std::mem::replace(&mut g.cfg, v);
                    g.apply(&old);
                    logs::controller(&format!("SIGHUP: reloaded {}", path.display()));
                }
                Err(e) => logs::controller(&format!("SIGHUP: config not reloaded: {e:#}")),
            }
        }
        st.lock().expect("state lock").supervise();
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::logs::controller("stopping");
    st.lock().expect("state lock").shutdown();
    Ok(())
}
