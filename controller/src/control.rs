//! The controller's Unix socket (`RUNDIR/controller.sock`), where connectors ask to open a
//! stream (the messages are `ipc::messages`' `ControlRequest` and `ControlReply`).

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use ipc::messages::{ControlReply, ControlRequest, Credential, OpenMode, OpenRequest, RefusalCode};

use crate::config;
use crate::state::open::{OpenRefusal, ViewerKey};
use crate::state::State;
use crate::triggers;

/// Binds `RUNDIR/controller.sock` and serves it on a thread (one short-lived thread per
/// request). Errors: another controller answers on that socket, or it cannot be bound.
pub fn start(st: Arc<Mutex<State>>) -> Result<()> {
    let path = State::lock(&st).rundir.join("controller.sock");
    if UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "another Sluice controller answers on {}; use another --rundir",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(conn, st) {
                    crate::logs::controller(&format!("control socket: {e:#}"));
                }
            });
        }
    });
    Ok(())
}

fn reply(sock: &UnixStream, reply: ControlReply) -> Result<()> {
    ipc::socket::send(sock, &reply, &[])
}

/// A refusal of kind `code` with `reason`.
fn refusal(code: RefusalCode, reason: &str) -> ControlReply {
    ControlReply::Refused {
        code,
        reason: reason.to_string(),
    }
}

fn serve(sock: UnixStream, st: Arc<Mutex<State>>) -> Result<()> {
    let req = match ipc::socket::recv::<ControlRequest>(&sock, Duration::from_secs(5)) {
        Ok((req, _)) => req,
        Err(e) => {
            let _ = reply(&sock, refusal(RefusalCode::Failed, &format!("{e:#}")));
            return Err(e);
        }
    };
    let open = match req {
        ControlRequest::Report(r) => {
            State::lock(&st).report(&r);
            return reply(&sock, ControlReply::Ok);
        }
        ControlRequest::Open(open) => open,
    };
    let OpenRequest {
        stream,
        mode,
        addr,
        credential,
        url: asked_url,
        session: who,
    } = open;
    let push = mode == OpenMode::Push;
    let asked_url = asked_url.unwrap_or_default();
    // The name is checked before any trigger or rewrite sees it: a name is one payload
    // line, and a `%0A` a connector decoded into it would forge the lines after it.
    if let Err(why) = check_requested_name(&stream) {
        crate::logs::controller(&format!(
            "refused to open a stream for {} from {}: {why}",
            if push { "publishing" } else { "playing" },
            triggers::payload_line(&addr).text
        ));
        return reply(&sock, refusal(RefusalCode::NotFound, &why));
    }
    let cred = match &credential {
        Credential::Digest { header, method } => config::Credential::Digest { header, method },
        Credential::Key(k) => config::Credential::Key(k),
        Credential::None => config::Credential::None,
    };
    // Blocking triggers first, without the state locked: a slow handler holds up this
    // connection only.
    // Only the triggers are needed here: not a copy of the whole config per open (every HLS
    // segment request opens its stream).
    let cfg = {
        let g = State::lock(&st);
        match g.cfg.pointer("/config/triggers") {
            Some(t) => serde_json::json!({"config": {"triggers": t}}),
            None => serde_json::Value::Null,
        }
    };
    let (connector, session) = who.unwrap_or_default();
    let mut stream = stream;
    let refuse = |stream: &str, why: String| {
        crate::logs::controller(&format!(
            "refused to open {stream} for {} from {addr}: {why}",
            if push { "publishing" } else { "playing" }
        ));
        reply(&sock, refusal(RefusalCode::Forbidden, &why))
    };
    if push {
        let url = match asked_url.clone() {
            u if u.is_empty() => format!("{}://{}", connector.to_ascii_lowercase(), stream),
            u => u,
        };
        if let Some(a) = triggers::ask(
            &cfg,
            "PUSH_REWRITE",
            Some(&stream),
            &[url.clone(), addr.clone(), stream.clone()],
        ) {
            if a.is_empty() || !triggers::allows(&a) {
                return refuse(&stream, "refused by the PUSH_REWRITE trigger".into());
            }
            if a != stream {
                if !config::valid_stream_name(&a) {
                    return refuse(
                        &stream,
                        format!("PUSH_REWRITE gave an invalid stream name {a:?}"),
                    );
                }
                stream = a;
            }
        }
        if let Some(a) = triggers::ask(
            &cfg,
            "STREAM_PUSH",
            Some(&stream),
            &[stream.clone(), addr.clone(), connector.clone(), url],
        ) {
            if !triggers::allows(&a) {
                return refuse(&stream, "refused by the STREAM_PUSH trigger".into());
            }
        }
    } else if let Some(a) = triggers::ask(
        &cfg,
        "PLAY_REWRITE",
        Some(&stream),
        &[
            stream.clone(),
            addr.clone(),
            connector.clone(),
            asked_url.clone(),
        ],
    ) {
        // The stream to play instead; nothing or false refuses.
        if a.is_empty() || !triggers::allows(&a) {
            return refuse(&stream, "refused by the PLAY_REWRITE trigger".into());
        }
        if a != stream {
            if !config::valid_stream_name(&a) {
                return refuse(
                    &stream,
                    format!("PLAY_REWRITE gave an invalid stream name {a:?}"),
                );
            }
            stream = a;
        }
    }
    if !push && !triggers::handlers(&cfg, "USER_NEW", Some(&stream)).is_empty() {
        // One answer per viewer session (an HLS player opens the stream per request): a
        // yes is remembered for a minute per stream, address and connector.
        let key = ViewerKey {
            stream: stream.clone(),
            addr: addr.clone(),
            connector: connector.clone(),
        };
        let known = State::lock(&st).opening.user_ok(&key);
        if !known {
            let payload = [
                stream.clone(),
                addr.clone(),
                session.clone(),
                connector.clone(),
                asked_url.clone(),
                session.clone(),
            ];
            if let Some(a) = triggers::ask(&cfg, "USER_NEW", Some(&stream), &payload) {
                if !triggers::allows(&a) {
                    return refuse(&stream, "refused by the USER_NEW trigger".into());
                }
            }
            State::lock(&st).opening.remember_user(key);
        }
    }
    // STREAM_SOURCE: the source of a stream whose buffer is about to start may be rewritten
    // (an empty answer keeps the configured one).
    if !triggers::handlers(&cfg, "STREAM_SOURCE", Some(&stream)).is_empty() {
        let running = State::lock(&st).procs.buffers.contains_key(&stream);
        if !running {
            if let Some(a) = triggers::ask(&cfg, "STREAM_SOURCE", Some(&stream), &[stream.clone()])
            {
                let a = a.trim().to_string();
                if !a.is_empty() && !a.chars().any(|c| c.is_control()) {
                    crate::logs::controller(&format!("STREAM_SOURCE: {stream} from {a}"));
                    State::lock(&st)
                        .opening
                        .source_rewrites
                        .insert(stream.clone(), a);
                }
            }
        }
    }
    let (mut opened, mut real) = {
        let mut g = State::lock(&st);
        let real = push
            .then(|| config::stream_of_key(&g.cfg, &stream))
            .flatten()
            .unwrap_or_else(|| stream.clone());
        (g.open_stream(&stream, push, &addr, cred), real)
    };
    // DEFAULT_STREAM: a viewer of a stream that does not exist may be given another one.
    if !push && matches!(&opened, Err(r) if r.code == "notfound") {
        if let Some(a) = triggers::ask(
            &cfg,
            "DEFAULT_STREAM",
            Some(&stream),
            &[
                stream.clone(),
                addr.clone(),
                connector.clone(),
                asked_url.clone(),
            ],
        ) {
            if a != stream && config::valid_stream_name(&a) {
                crate::logs::controller(&format!("DEFAULT_STREAM: {stream} plays {a}"));
                opened = State::lock(&st).open_stream(&a, false, &addr, config::Credential::None);
                real = a;
            }
        }
    }
    match opened {
        Ok(socket) => {
            // Wait for the buffer's socket: a buffer started for this request, or for another
            // one a moment ago, may not be listening yet.
            {
                // A buffer that fails at once (its file source is missing, unreadable or of
                // an unknown format) leaves its reason beside the socket: the viewer gets it.
                let rundir = State::lock(&st).rundir.clone();
                let error = buffer::error_path(&rundir, &real);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !socket.exists() && Instant::now() < deadline {
                    if let Ok(why) = std::fs::read_to_string(&error) {
                        let dir = source_dir(&st, &real);
                        let why = hide_paths(why.trim(), dir.as_deref());
                        let reason = format!("its input failed: {why}");
                        return reply(&sock, refusal(RefusalCode::NotFound, &reason));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !socket.exists() {
                    return reply(
                        &sock,
                        refusal(RefusalCode::Failed, "the buffer did not start"),
                    );
                }
            }
            reply(
                &sock,
                ControlReply::Opened {
                    socket,
                    stream: real,
                },
            )
        }
        Err(OpenRefusal { code, reason }) => {
            crate::logs::controller(&format!(
                "refused to open {stream} for {} from {addr}: {reason}",
                if push { "publishing" } else { "playing" }
            ));
            let dir = source_dir(&st, &real);
            let reason = hide_paths(&reason, dir.as_deref());
            reply(&sock, refusal(RefusalCode::parse(code), &reason))
        }
    }
}

/// Checks a stream name a connector asks to open (the name, or a stream key, as the client
/// gave it): [`config::valid_stream_name`]'s rules. Errors: the reason, with the name shown
/// escaped (`{:?}`) and cut to 120 characters, since it is the client's text.
pub fn check_requested_name(name: &str) -> std::result::Result<(), String> {
    if config::valid_stream_name(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(120).collect();
    Err(format!(
        "invalid stream name {shown:?}: 1 to 100 of A-Z a-z 0-9 _ + . -, no '..', not starting with '.'"
    ))
}

/// `text` with each absolute path cut to its file name: reasons go to viewers, who need not
/// learn where the server keeps its files (the log keeps the whole path). `dir`, the folder
/// of the stream's source, is removed first wherever it appears (it may hold spaces); other
/// paths are cut at spaces.
pub fn hide_paths(text: &str, dir: Option<&str>) -> String {
    let text = match dir.map(|d| d.trim_end_matches('/')).filter(|d| d.len() > 1) {
        Some(d) => text.replace(&format!("{d}/"), ""),
        None => text.to_string(),
    };
    text.split(' ')
        .map(|w| match w.strip_prefix('/') {
            Some(rest) => rest.rsplit('/').next().unwrap_or(rest),
            None => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The folder of a stream's configured file source (the source itself when it is a folder).
fn source_dir(st: &Mutex<State>, stream: &str) -> Option<String> {
    let g = State::lock(st);
    let v = config::find_stream(&g.cfg, stream)?;
    let src = std::path::Path::new(v.get("source")?.as_str()?);
    let dir = if src.is_dir() { src } else { src.parent()? };
    Some(dir.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::{check_requested_name, hide_paths};

    #[test]
    fn names_are_checked_before_triggers_see_them() {
        assert!(check_requested_name("live").is_ok());
        assert!(check_requested_name("live+cam_1.a-b").is_ok());
        for bad in [
            "live\nfalse",
            "live\r",
            "a b",
            "",
            "../x",
            ".hidden",
            "a/b",
            "x\u{2028}y",
            &"n".repeat(101),
        ] {
            let e = check_requested_name(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
        }
        // The client's text is cut in the reason.
        let long = "\u{1}".repeat(5000);
        assert!(check_requested_name(&long).unwrap_err().len() < 1000);
    }

    #[test]
    fn viewers_see_file_names_not_paths() {
        assert_eq!(
            hide_paths(
                "source /srv/media/a b/clip.flv of vod does not exist",
                Some("/srv/media/a b")
            ),
            "source clip.flv of vod does not exist"
        );
        assert_eq!(
            hide_paths(
                "/srv/x.xyz: unsupported file source (supported: .flv, .ts)",
                None
            ),
            "x.xyz: unsupported file source (supported: .flv, .ts)"
        );
        assert_eq!(
            hide_paths("no stream nosuch", Some("/")),
            "no stream nosuch"
        );
    }
}
