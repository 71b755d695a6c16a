//! The messages between Sluice's processes, typed, each with its one encoding: a DTSC
//! `DTCM` command object (`docs/DTSC.md`, "TCP protocol": MistServer's command framing)
//! whose `cmd` member names it and whose other members are strings or integers. Both ends
//! use these types, so a member is spelt in one place.
//!
//! On the controller's socket (`RUNDIR/controller.sock`), one request and one reply per
//! connection:
//! * [`ControlRequest::Open`] `{"cmd":"open","stream":S,"mode":"play"|"push","addr":IP,
//!   "key":K | "digest":HEADER,"method":M, "url":U,"connector":C,"session":HEX}` →
//!   [`ControlReply::Opened`] `{"cmd":"ok","socket":PATH,"stream":REAL}` or
//!   [`ControlReply::Refused`] `{"cmd":"error","code":"notfound"|"forbidden"|
//!   "unauthorized"|"failed","reason":TEXT}`;
//! * [`ControlRequest::Report`] `{"cmd":"report","what":"RECORDING_END"|"PUSH_FAILED",…}`
//!   → [`ControlReply::Ok`] `{"cmd":"ok"}`.
//!
//! On a buffer's socket: [`BufferRequest::Attach`] `{"cmd":"attach","mode":"play"|"push"|
//! "observe"}` → [`BufferReply::Attached`] `{"cmd":"attached","meta_size":N,"data_size":N}`
//! (bytes; the two region descriptors come with it) or [`BufferReply::Error`]
//! `{"cmd":"error","reason":TEXT}`; later a publisher may send [`BufferRequest::Unpublish`]
//! `{"cmd":"unpublish"}` (the publish ended on purpose) and anyone [`BufferRequest::Ping`].

use std::path::PathBuf;

use dtsc::wire::Value;

/// A command object that is not the message it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not an object with a string `cmd`.
    #[error("not a command object")]
    NotACommand,
    /// A `cmd` this end does not know.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A member the command needs is missing or of the wrong type.
    #[error("{cmd}: member {member:?} missing or not a {kind}")]
    Member {
        /// The command.
        cmd: &'static str,
        /// The member.
        member: &'static str,
        /// What it should be ("string", "integer", "known value").
        kind: &'static str,
    },
}

/// How a connection opens a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// To play it (a viewer, a push out, a recording).
    Play,
    /// To publish into it.
    Push,
}

/// What a publisher proved itself with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing.
    None,
    /// The stream key it gave (RTMP's stream name part, a DTSC push's `key`).
    Key(String),
    /// An RTSP `Authorization: Digest` header (RFC 2617 §3.2.2) and the method it came
    /// with: the controller checks it against the stream's key, which never reaches the
    /// connector.
    Digest {
        /// The header's value.
        header: String,
        /// The request's method (`ANNOUNCE`).
        method: String,
    },
}

/// A request to open a stream (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The stream as the client named it (or a stream key).
    pub stream: String,
    /// Play or publish.
    pub mode: OpenMode,
    /// The client's IP address.
    pub addr: String,
    /// What a publisher proved itself with.
    pub credential: Credential,
    /// The URL the client asked for, query included, for the triggers (PUSH_REWRITE,
    /// STREAM_PUSH, PLAY_REWRITE, USER_NEW, DEFAULT_STREAM).
    pub url: Option<String>,
    /// The connector (`RTMP`, `HLS`, …) and the session id (16 hex digits), for USER_NEW and
    /// STREAM_PUSH.
    pub session: Option<(String, String)>,
}

/// A finished recording file (RECORDING_END's payload). Times are Unix seconds, DTS in ms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingEnd {
    /// The stream recorded.
    pub stream: String,
    /// The file written.
    pub path: String,
    /// `flv`, `ts`, `mp4` or `mkv`.
    pub format: String,
    /// Its size, bytes.
    pub bytes: u64,
    /// Wall-clock length, s.
    pub seconds: u64,
    /// When it started and ended, Unix s.
    pub started: u64,
    /// When it ended, Unix s.
    pub ended: u64,
    /// DTS of its first and last packet, ms.
    pub first_ms: u64,
    /// DTS of its last packet, ms.
    pub last_ms: u64,
    /// Why it ended.
    pub reason: String,
}

/// An event a push or recording process reports to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A recording file is finished (the controller fires RECORDING_END and lists it).
    RecordingEnd(RecordingEnd),
    /// A push cannot succeed by retrying (the controller ends it with PUSH_END).
    PushFailed {
        /// The stream pushed.
        stream: String,
        /// The target, as configured.
        target: String,
        /// Why.
        reason: String,
    },
}

/// A request on the controller's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// Open a stream.
    Open(OpenRequest),
    /// Report an event.
    Report(Report),
}

/// Why the controller refused to open a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// No such stream (or its input failed).
    NotFound,
    /// This client may not (publish from afar, a trigger said no).
    Forbidden,
    /// A key or credentials are needed, and none or wrong ones came.
    Unauthorized,
    /// Anything else.
    Failed,
}

impl RefusalCode {
    /// The wire name (`notfound`, `forbidden`, `unauthorized`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::NotFound => "notfound",
            RefusalCode::Forbidden => "forbidden",
            RefusalCode::Unauthorized => "unauthorized",
            RefusalCode::Failed => "failed",
        }
    }

    /// The code of a wire name; an unknown one is [`RefusalCode::Failed`].
    pub fn parse(s: &str) -> RefusalCode {
        match s {
            "notfound" => RefusalCode::NotFound,
            "forbidden" => RefusalCode::Forbidden,
            "unauthorized" => RefusalCode::Unauthorized,
            _ => RefusalCode::Failed,
        }
    }
}

/// The controller's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// The stream is open: its buffer's socket, and the stream it is (a stream key opens
    /// the stream it stands for).
    Opened {
        /// The buffer's Unix socket.
        socket: PathBuf,
        /// The real stream name.
        stream: String,
    },
    /// Refused, with the reason a client may be told.
    Refused {
        /// The kind of refusal.
        code: RefusalCode,
        /// Why, in words.
        reason: String,
    },
    /// A report was taken.
    Ok,
}

/// How a process attaches to a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// A viewer: counted, reads packets.
    Play,
    /// The publisher: writes frames; one at a time.
    Push,
    /// The controller's stats: reads counters, not counted.
    Observe,
}

impl AttachMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Play => "play",
            AttachMode::Push => "push",
            AttachMode::Observe => "observe",
        }
    }
}

/// A command on a buffer's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferRequest {
    /// Attach in this mode (the first command of a connection).
    Attach(AttachMode),
    /// The publisher ends its publish on purpose: the stream ends at once, without the
    /// grace time a dropped publisher gets.
    Unpublish,
    /// Nothing but proof of life.
    Ping,
}

/// A buffer's answer to [`BufferRequest::Attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferReply {
    /// Attached; the meta and data regions' descriptors come with this message.
    Attached {
        /// Size of the meta region, bytes.
        meta_size: u64,
        /// Size of the data region, bytes.
        data_size: u64,
    },
    /// Refused ("another publisher is live on this stream").
    Error {
        /// Why.
        reason: String,
    },
}

/// A message with its one encoding as a `DTCM` command object.
pub trait Message: Sized {
    /// The command object.
    fn to_value(&self) -> Value;
    /// The message of a command object. Errors: not this kind of message, or a member
    /// missing or of the wrong type.
    fn from_value(v: &Value) -> Result<Self, MessageError>;
}

/// `{"cmd":CMD, members…}` with string members.
fn command(cmd: &str, members: Vec<(&str, Value)>) -> Value {
    let mut all = vec![("cmd".to_string(), Value::str(cmd))];
    all.extend(members.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::Object(all)
}

fn cmd_of(v: &Value) -> Result<&str, MessageError> {
    v.get("cmd")
        .and_then(Value::as_str)
        .ok_or(MessageError::NotACommand)
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn need(v: &Value, cmd: &'static str, member: &'static str) -> Result<String, MessageError> {
    string(v, member).ok_or(MessageError::Member {
        cmd,
        member,
        kind: "string",
    })
}

/// A number sent as a decimal string (the reports' members); 0 when absent or not a number.
fn number(v: &Value, key: &str) -> u64 {
    string(v, key).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Message for ControlRequest {
    fn to_value(&self) -> Value {
        match self {
            ControlRequest::Open(o) => {
                let mut m = vec![
                    ("stream", Value::str(&o.stream)),
                    (
                        "mode",
                        Value::str(match o.mode {
                            OpenMode::Play => "play",
                            OpenMode::Push => "push",
                        }),
                    ),
                    ("addr", Value::str(&o.addr)),
                ];
                match &o.credential {
                    Credential::None => {}
                    Credential::Key(k) => m.push(("key", Value::str(k))),
                    Credential::Digest { header, method } => {
                        m.push(("digest", Value::str(header)));
                        m.push(("method", Value::str(method)));
                    }
                }
                if let Some(u) = &o.url {
                    m.push(("url", Value::str(u)));
                }
                if let Some((connector, session)) = &o.session {
                    m.push(("connector", Value::str(connector)));
                    m.push(("session", Value::str(session)));
                }
                command("open", m)
            }
            ControlRequest::Report(Report::RecordingEnd(r)) => command(
                "report",
                vec![
                    ("what", Value::str("RECORDING_END")),
                    ("stream", Value::str(&r.stream)),
                    ("path", Value::str(&r.path)),
                    ("format", Value::str(&r.format)),
                    ("bytes", Value::str(&r.bytes.to_string())),
                    ("seconds", Value::str(&r.seconds.to_string())),
                    ("started", Value::str(&r.started.to_string())),
                    ("ended", Value::str(&r.ended.to_string())),
                    ("first_ms", Value::str(&r.first_ms.to_string())),
                    ("last_ms", Value::str(&r.last_ms.to_string())),
                    ("reason", Value::str(&r.reason)),
                ],
            ),
            ControlRequest::Report(Report::PushFailed {
                stream,
                target,
                reason,
            }) => command(
                "report",
                vec![
                    ("what", Value::str("PUSH_FAILED")),
                    ("stream", Value::str(stream)),
                    ("target", Value::str(target)),
                    ("reason", Value::str(reason)),
                ],
            ),
        }
    }

    fn from_value(v: &Value) -> Result<Self, MessageError> {
        match cmd_of(v)? {
            "open" => {
                let mode = match string(v, "mode").as_deref() {
                    Some("push") => OpenMode::Push,
                    Some("play") => OpenMode::Play,
                    _ => {
                        return Err(MessageError::Member {
                            cmd: "open",
                            member: "mode",
                            kind: "known value",
                        })
                    }
                };
                let credential = match (string(v, "digest"), string(v, "key")) {
                    (Some(header), _) => Credential::Digest {
                        header,
                        method: string(v, "method").unwrap_or_default(),
                    },
                    (None, Some(k)) => Credential::Key(k),
                    (None, None) => Credential::None,
                };
                Ok(ControlRequest::Open(OpenRequest {
                    stream: need(v, "open", "stream")?,
                    mode,
                    addr: string(v, "addr").unwrap_or_default(),
                    credential,
                    url: string(v, "url"),
                    session: string(v, "connector").zip(string(v, "session")),
                }))
            }
            "report" => match string(v, "what").as_deref() {
                Some("RECORDING_END") => {
                    Ok(ControlRequest::Report(Report::RecordingEnd(RecordingEnd {
                        stream: string(v, "stream").unwrap_or_default(),
                        path: string(v, "path").unwrap_or_default(),
                        format: string(v, "format").unwrap_or_default(),
                        bytes: number(v, "bytes"),
                        seconds: number(v, "seconds"),
                        started: number(v, "started"),
                        ended: number(v, "ended"),
                        first_ms: number(v, "first_ms"),
                        last_ms: number(v, "last_ms"),
                        reason: string(v, "reason").unwrap_or_default(),
                    })))
                }
                Some("PUSH_FAILED") => Ok(ControlRequest::Report(Report::PushFailed {
                    stream: string(v, "stream").unwrap_or_default(),
                    target: string(v, "target").unwrap_or_default(),
                    reason: string(v, "reason").unwrap_or_default(),
                })),
                _ => Err(MessageError::Member {
                    cmd: "report",
                    member: "what",
                    kind: "known value",
                }),
            },
            other => Err(MessageError::UnknownCommand(other.to_string())),
        }
    }
}

impl Message for ControlReply {
    fn to_value(&self) -> Value {
        match self {
            ControlReply::Opened { socket, stream } => command(
                "ok",
                vec![
                    ("socket", Value::str(&socket.to_string_lossy())),
                    ("stream", Value::str(stream)),
                ],
            ),
            ControlReply::Refused { code, reason } => command(
                "error",
                vec![
                    ("code", Value::str(code.as_str())),
                    ("reason", Value::str(reason)),
                ],
            ),
            ControlReply::Ok => command("ok", Vec::new()),
        }
    }

    fn from_value(v: &Value) -> Result<Self, MessageError> {
        match cmd_of(v)? {
            "ok" => Ok(match string(v, "socket") {
                Some(socket) => ControlReply::Opened {
                    socket: PathBuf::from(socket),
                    stream: string(v, "stream").unwrap_or_default(),
                },
                None => ControlReply::Ok,
            }),
            "error" => Ok(ControlReply::Refused {
                code: RefusalCode::parse(&string(v, "code").unwrap_or_default()),
                reason: string(v, "reason").unwrap_or_default(),
            }),
            other => Err(MessageError::UnknownCommand(other.to_string())),
        }
    }
}

impl Message for BufferRequest {
    fn to_value(&self) -> Value {
        match self {
            BufferRequest::Attach(mode) => {
                command("attach", vec![("mode", Value::str(mode.as_str()))])
            }
            BufferRequest::Unpublish => command("unpublish", Vec::new()),
            BufferRequest::Ping => command("ping", Vec::new()),
        }
    }

    fn from_value(v: &Value) -> Result<Self, MessageError> {
        match cmd_of(v)? {
            "attach" => match string(v, "mode").as_deref() {
                Some("play") => Ok(BufferRequest::Attach(AttachMode::Play)),
                Some("push") => Ok(BufferRequest::Attach(AttachMode::Push)),
                Some("observe") => Ok(BufferRequest::Attach(AttachMode::Observe)),
                _ => Err(MessageError::Member {
                    cmd: "attach",
                    member: "mode",
                    kind: "known value",
                }),
            },
            "unpublish" => Ok(BufferRequest::Unpublish),
            "ping" => Ok(BufferRequest::Ping),
            other => Err(MessageError::UnknownCommand(other.to_string())),
        }
    }
}

impl Message for BufferReply {
    fn to_value(&self) -> Value {
        match self {
            BufferReply::Attached {
                meta_size,
                data_size,
            } => command(
                "attached",
                vec![
                    ("meta_size", Value::Int(*meta_size as i64)),
                    ("data_size", Value::Int(*data_size as i64)),
                ],
            ),
            BufferReply::Error { reason } => command("error", vec![("reason", Value::str(reason))]),
        }
    }

    fn from_value(v: &Value) -> Result<Self, MessageError> {
        let size = |member: &'static str| {
            v.get(member)
                .and_then(Value::as_int)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or(MessageError::Member {
                    cmd: "attached",
                    member,
                    kind: "integer",
                })
        };
        match cmd_of(v)? {
            "attached" => Ok(BufferReply::Attached {
                meta_size: size("meta_size")?,
                data_size: size("data_size")?,
            }),
            "error" => Ok(BufferReply::Error {
                reason: string(v, "reason").unwrap_or_else(|| "refused".into()),
            }),
            other => Err(MessageError::UnknownCommand(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let v = m.to_value();
        assert_eq!(M::from_value(&v).as_ref(), Ok(&m), "{v:?}");
    }

    #[test]
    fn every_message_reads_back_as_written() {
        round_trip(ControlRequest::Open(OpenRequest {
            stream: "live".into(),
            mode: OpenMode::Push,
            addr: "192.0.2.1".into(),
            credential: Credential::Digest {
                header: "Digest username=\"u\"".into(),
                method: "ANNOUNCE".into(),
            },
            url: Some("rtsp://h/live?x=1".into()),
            session: Some(("RTSP".into(), "00000000000000ff".into())),
        }));
        round_trip(ControlRequest::Open(OpenRequest {
            stream: "k".into(),
            mode: OpenMode::Play,
            addr: String::new(),
            credential: Credential::Key("secret".into()),
            url: None,
            session: None,
        }));
        round_trip(ControlRequest::Report(Report::RecordingEnd(RecordingEnd {
            stream: "s".into(),
            path: "/rec/s.ts".into(),
            format: "ts".into(),
            bytes: 1 << 40,
            seconds: 10,
            started: 1_700_000_000,
            ended: 1_700_000_010,
            first_ms: 0,
            last_ms: 9960,
            reason: "the stream ended".into(),
        })));
        round_trip(ControlRequest::Report(Report::PushFailed {
            stream: "s".into(),
            target: "rtmp://h/a/b".into(),
            reason: "refused".into(),
        }));
        round_trip(ControlReply::Opened {
            socket: "/run/s.sock".into(),
            stream: "s".into(),
        });
        for code in [
            RefusalCode::NotFound,
            RefusalCode::Forbidden,
            RefusalCode::Unauthorized,
            RefusalCode::Failed,
        ] {
            round_trip(ControlReply::Refused {
                code,
                reason: "why".into(),
            });
        }
        round_trip(ControlReply::Ok);
        for mode in [AttachMode::Play, AttachMode::Push, AttachMode::Observe] {
            round_trip(BufferRequest::Attach(mode));
        }
        round_trip(BufferRequest::Unpublish);
        round_trip(BufferRequest::Ping);
        round_trip(BufferReply::Attached {
            meta_size: 4096,
            data_size: 1 << 30,
        });
        round_trip(BufferReply::Error {
            reason: "another publisher is live on this stream".into(),
        });
    }

    #[test]
    fn the_wire_form_is_the_documented_one() {
        let v = BufferRequest::Attach(AttachMode::Observe).to_value();
        assert_eq!(
            v,
            Value::obj([
                ("cmd", Value::str("attach")),
                ("mode", Value::str("observe"))
            ])
        );
        let open = ControlRequest::Open(OpenRequest {
            stream: "s".into(),
            mode: OpenMode::Play,
            addr: "::1".into(),
            credential: Credential::None,
            url: None,
            session: None,
        });
        assert_eq!(
            open.to_value(),
            Value::obj([
                ("cmd", Value::str("open")),
                ("stream", Value::str("s")),
                ("mode", Value::str("play")),
                ("addr", Value::str("::1")),
            ])
        );
    }

    #[test]
    fn wrong_commands_are_named() {
        let v = Value::obj([("cmd", Value::str("attach")), ("mode", Value::str("x"))]);
        assert!(matches!(
            BufferRequest::from_value(&v),
            Err(MessageError::Member { member: "mode", .. })
        ));
        assert_eq!(
            BufferRequest::from_value(&Value::obj([("x", Value::Int(1))])),
            Err(MessageError::NotACommand)
        );
        assert_eq!(
            ControlRequest::from_value(&Value::obj([("cmd", Value::str("hi"))])),
            Err(MessageError::UnknownCommand("hi".into()))
        );
        let attached = Value::obj([
            ("cmd", Value::str("attached")),
            ("meta_size", Value::Int(-1)),
        ]);
        assert!(BufferReply::from_value(&attached).is_err());
    }
}
