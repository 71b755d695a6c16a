//! `sluice`: the controller, and the entry point of every Sluice process.
//!
//! Run as `sluice [-c CONFIG] [-a USER:PASS]` it is the angel, which runs the controller as
//! its child (`--no-angel`) and starts it again when it dies. The controller reads the
//! config, starts one listener process per protocol (restarting any that dies within a
//! second), starts a buffer process per stream when a stream is first published or played,
//! answers connectors on its Unix socket, and serves the JSON API on `config.controller`
//! (127.0.0.1:4242). The same binary runs every other process, by subcommand: `sluice
//! connector PROTO …` (a listener), `sluice buffer …`, `sluice pull …` (started by a buffer)
//! and `sluice push …` (pushes and recordings).

mod api;
mod auth;
mod config;
mod control;
mod guard;
mod logs;
mod state;
mod triggers;

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
    /// Make an API account, or set its password, at start (MistServer's `-a`): USER:PASS.
    /// The config keeps the password's MD5 only; the log names the user, never the
    /// password. (The arguments of a process can be read by other users of the machine:
    /// change the password afterwards where that matters.)
    #[arg(short = 'a', long = "account", value_name = "USER:PASS")]
    account: Option<String>,
    /// Run the controller itself, without the angel that restarts it (the angel starts its
    /// controller with this).
    #[arg(long, hide = true)]
    no_angel: bool,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Run a stream's buffer (started by the controller).
    #[command(hide = true)]
    Buffer(buffer::BufferArgs),
    /// Pull a stream into its buffer (started by the buffer): an RTSP camera, MPEG-TS over
    /// UDP, HTTP-TS, HTTP-FLV, HLS, RTMP or DTSC from another server.
    #[command(hide = true)]
    Pull(connectors::ingest::rtsp_pull::PullArgs),
    /// Push a stream to another server over RTMP or RTSP, or record it to a file (started by
    /// the controller's pushes and recordings, or by hand).
    #[command(hide = true)]
    Push(connectors::egress::PushArgs),
    /// Run a protocol listener (started by the controller).
    #[command(hide = true)]
    Connector {
        /// RTMP, RTMPS, RTSP, RTSPS, HTTP, HTTPS, DTSC or TS.
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
        #[command(flatten)]
        limits: connectors::core::limits::LimitArgs,
        /// TLS listeners (HTTPS, RTMPS, RTSPS): the certificate chain, PEM.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// TLS listeners: the private key, PEM.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.role {
        Some(Role::Buffer(args)) => {
            ipc::process::set_process_name("buffer");
            buffer::run(args)
        }
        Some(Role::Pull(args)) if args.url.starts_with("rtsp://") => {
            ipc::process::set_process_name("RTSP pull");
            connectors::ingest::rtsp_pull::run(args)
        }
        Some(Role::Pull(args)) => {
            ipc::process::set_process_name("pull");
            connectors::ingest::stream_pull::run(args)
        }
        Some(Role::Push(args)) => {
            ipc::process::set_process_name("push");
            connectors::egress::run(args)
        }
        Some(Role::Connector {
            protocol,
            port,
            interface,
            rundir,
            stream,
            limits,
            cert,
            key,
        }) => {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => Some(connectors::core::tls::CertFiles { cert, key }),
                _ => None,
            };
            run_connector(
                &protocol,
                port,
                &interface,
                rundir,
                stream,
                limits.limits(),
                tls,
            )
        }
        None if cli.no_angel => run_controller(cli.config, cli.rundir, cli.account, true),
        None => match cli.account.as_deref().map(auth::parse_account) {
            // A bad --account is refused before the angel starts a controller that would
            // fail the same way ten times.
            Some(Err(e)) => Err(anyhow::anyhow!(e)),
            _ => run_angel(),
        },
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
    limits: connectors::core::limits::Limits,
    tls: Option<connectors::core::tls::CertFiles>,
) -> Result<()> {
    use connectors::core::listener::serve;
    let ctx = connectors::Ctx {
        rundir,
        default_stream: stream,
    };
    let needs_cert = |p: &str| {
        tls.clone()
            .ok_or_else(|| anyhow::anyhow!("{p} needs --cert and --key"))
    };
    match protocol {
        "RTMP" => serve(
            "RTMP",
            interface,
            port,
            ctx,
            limits,
            None,
            connectors::serve::rtmp::handle,
        ),
        "HTTP" => serve(
            "HTTP",
            interface,
            port,
            ctx,
            limits,
            None,
            connectors::http::handle,
        ),
        "TS" => serve(
            "TS",
            interface,
            port,
            ctx,
            limits,
            None,
            connectors::serve::ts::handle,
        ),
        "RTSP" => serve(
            "RTSP",
            interface,
            port,
            ctx,
            limits,
            None,
            connectors::serve::rtsp::handle,
        ),
        "DTSC" => serve(
            "DTSC",
            interface,
            port,
            ctx,
            limits,
            None,
            connectors::serve::dtsc::handle,
        ),
        "HTTPS" => {
            let t = needs_cert("HTTPS")?;
            serve(
                "HTTPS",
                interface,
                port,
                ctx,
                limits,
                Some(t),
                connectors::http::handle,
            )
        }
        "RTMPS" => {
            let t = needs_cert("RTMPS")?;
            serve(
                "RTMPS",
                interface,
                port,
                ctx,
                limits,
                Some(t),
                connectors::serve::rtmp::handle,
            )
        }
        "RTSPS" => {
            let t = needs_cert("RTSPS")?;
            serve(
                "RTSPS",
                interface,
                port,
                ctx,
                limits,
                Some(t),
                connectors::serve::rtsp::handle,
            )
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

/// The angel (MistServer's name): the first process, which starts the controller and starts
/// it again when it dies (a crash, a SIGKILL), within a second. The new controller adopts the
/// listeners, buffers and pushes still running (`State::adopt`), so viewers and publishers
/// are not cut. SIGTERM/SIGINT are passed on and end both; SIGHUP is passed on (config
/// reload). A controller that exits by itself (after `shutdown`) ends the angel too.
fn run_angel() -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    // The angel leads the process group: stopping the group stops everything.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    ipc::process::set_process_name("sluice-angel");
    // What a dead controller leaves running is reparented to the angel (not to init): it
    // stays in Sluice's process tree, and the angel reaps it when it ends.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let term = ipc::process::install_term_handler();
    install_hup_handler();
    let exe = std::fs::read_link("/proc/self/exe")
        .or_else(|_| std::env::current_exe())
        .context("finding this binary")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // The log pipe outlives each controller: what the processes a dead controller left
    // running write waits in it for the next one (`logs::init`).
    let logs::Pipe {
        read: log_r,
        write: log_w,
    } = logs::make_pipe().context("making the log pipe")?;
    let log_pipe = {
        use std::os::fd::AsRawFd;
        format!("{},{}", log_r.as_raw_fd(), log_w.as_raw_fd())
    };
    let mut restarts = 0u32;
    loop {
        let mut child = std::process::Command::new(&exe)
            .args(&args)
            .arg("--no-angel")
            .env(logs::PIPE_ENV, &log_pipe)
            .spawn()
            .context("starting the controller")?;
        let pid = Pid::from_raw(child.id() as i32);
        let started = std::time::Instant::now();
        let status = loop {
            if term.load(Ordering::SeqCst) {
                let _ = kill(pid, Signal::SIGTERM);
                let _ = child.wait();
                return Ok(());
            }
            if HUP.swap(false, Ordering::SeqCst) {
                let _ = kill(pid, Signal::SIGHUP);
            }
            // Reap whatever ended: the controller, or an orphan of an earlier one.
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => {
                    break (code == 0, format!("exit status: {code}"))
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                    break (false, format!("signal: {sig}"))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(_) => continue,
            }
        };
        // `child` was reaped above; dropping it does not wait.
        drop(child);
        let (ok, status) = status;
        if ok || term.load(Ordering::SeqCst) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            restarts = 0;
        }
        restarts += 1;
        if restarts > 10 {
            anyhow::bail!("the controller failed 10 times in a row ({status}); giving up");
        }
        eprintln!(
            "[angel {}] the controller ended ({status}); starting it again",
            std::process::id()
        );
        std::thread::sleep(Duration::from_millis(if restarts == 1 {
            200
        } else {
            1000
        }));
    }
}

fn run_controller(
    config_path: PathBuf,
    rundir: Option<PathBuf>,
    account: Option<String>,
    under_angel: bool,
) -> Result<()> {
    logs::init().context("taking the log pipe")?;
    let mut cfg = config::load_or_create(&config_path)?;
    if let Some(a) = account {
        let auth::Account {
            user,
            password: pass,
        } = auth::parse_account(&a).map_err(|e| anyhow::anyhow!(e))?;
        if auth::set_account(&mut cfg, user, pass) {
            config::write(&config_path, &cfg)
                .with_context(|| format!("saving {}", config_path.display()))?;
            logs::controller(&format!(
                "--account: account {user:?} made or its password set"
            ));
        } else {
            logs::controller(&format!("--account: account {user:?} is as given"));
        }
    }
    let config::ApiAddr {
        iface: api_iface,
        port: api_port,
    } = config::api_addr(&cfg);
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
    if !under_angel {
        let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    }
    let term = ipc::process::install_term_handler();
    let st = Arc::new(Mutex::new(state::State::new(
        cfg,
        config_path,
        rundir.clone(),
    )?));
    // The API port first: a second Sluice with the same config fails here, before it could
    // touch the first one's sockets.
    api::start(st.clone(), &api_iface, api_port)?;
    if let Some(tls) = config::api_tls(&state::State::lock(&st).cfg) {
        api::start_tls(&api_iface, tls.port, api_port, tls.files)?;
    }
    // Segments cached by an earlier server in this folder are not served again.
    connectors::core::segcache::clear(&rundir)
        .with_context(|| format!("clearing the segment cache in {}", rundir.display()))?;
    control::start(st.clone())?;
    // What an earlier controller left running (the angel restarted this one) is taken over.
    state::State::lock(&st).adopt();
    crate::logs::controller(&format!(
        "API on http://{api_iface}:{api_port}/api, sockets in {}",
        rundir.display()
    ));
    install_hup_handler();
    {
        let g = state::State::lock(&st);
        triggers::fire(&g.cfg, "SYSTEM_START", None, Vec::new());
    }
    while !term.load(Ordering::SeqCst) {
        if HUP.swap(false, Ordering::SeqCst) {
            let mut g = state::State::lock(&st);
            let path = g.config_path().to_path_buf();
            match config::load_or_create(&path) {
                Ok(v) => {
                    let old = std::mem::replace(&mut g.cfg, v);
                    g.apply(&old);
                    logs::controller(&format!("SIGHUP: reloaded {}", path.display()));
                }
                Err(e) => logs::controller(&format!("SIGHUP: config not reloaded: {e:#}")),
            }
            // TLS listeners load their certificate files again (a renewal).
            g.procs.signal_tls_listeners();
        }
        state::State::lock(&st).supervise();
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::logs::controller("stopping");
    {
        // SYSTEM_STOP's handlers are waited for (briefly): the process is about to end.
        let cfg = state::State::lock(&st).cfg.clone();
        for h in triggers::handlers(&cfg, "SYSTEM_STOP", None) {
            let _ = triggers::call(
                &h,
                "SYSTEM_STOP",
                &["shutdown".into()],
                triggers::SYNC_TIMEOUT,
            );
        }
    }
    state::State::lock(&st).shutdown();
    Ok(())
}
