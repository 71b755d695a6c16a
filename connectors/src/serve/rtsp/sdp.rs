//! The SDP Sluice describes a stream with (RFC 4566): DESCRIBE answers and the ANNOUNCE of
//! an RTSP push out.

use super::*;

/// The SDP of the stream (RFC 4566; media descriptions per RFC 6184 §8.2.1, RFC 7798 §7.2,
/// RFC 3640 §4.1), written with `sdp-types`.
pub(super) fn describe(name: &str, c: &Cursor, sock: &TcpStream) -> String {
    let local = crate::core::tls::local_addr(sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    let ended = c.reader().meta().state() == dtsc::shm::STATE_ENDED;
    let range = match (ended, window_ms(c)) {
        (true, Some((first, last))) => format!("npt=0-{:.3}", (last - first) as f64 / 1000.0),
        _ => "npt=now-".into(),
    };
    sdp_of(&rtsp_tracks(c.tracks()), name, &local, &range)
}

/// The SDP (RFC 4566) of `tracks` for session `name` from address `local`: one medium per
/// track with `rtpmap`/`fmtp` of `dtsc::rtp`, payload types from `rtp::payload_type`,
/// `a=control:trackID=N`, languages, and the session's `a=range` (`range`, e.g.
/// `npt=now-`). For DESCRIBE answers and for ANNOUNCE when Sluice pushes out.
pub fn sdp_of(tracks: &[&Track], name: &str, local: &str, range: &str) -> String {
    use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};
    let local = local.to_string();
    let range = range.to_string();
    let attr = |a: &str, v: Option<String>| Attribute {
        attribute: a.into(),
        value: v,
    };
    let medias = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pt = rtp::payload_type(t, i);
            let mut attributes = vec![attr("rtpmap", rtp::rtpmap(t).map(|m| format!("{pt} {m}")))];
            if let Some(f) = rtp::fmtp(t) {
                attributes.push(attr("fmtp", Some(format!("{pt} {f}"))));
            }
            attributes.push(attr("control", Some(format!("trackID={}", t.id))));
            if let Some(lang) = t.lang.as_ref().filter(|l| !l.is_empty() && *l != "und") {
                attributes.push(attr("lang", Some(lang.clone())));
            }
            Media {
                media: if t.kind == dtsc::TrackKind::Video {
                    "video"
                } else {
                    "audio"
                }
                .into(),
                port: 0,
                num_ports: None,
                proto: "RTP/AVP".into(),
                fmt: pt.to_string(),
                media_title: None,
                connections: Vec::new(),
                bandwidths: Vec::new(),
                key: None,
                attributes,
            }
        })
        .collect();
    let session = Session {
        origin: Origin {
            username: None,
            sess_id: "0".into(),
            sess_version: 0,
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            unicast_address: local,
        },
        session_name: name.into(),
        session_description: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: Some(Connection {
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            connection_address: "0.0.0.0".into(),
        }),
        bandwidths: Vec::new(),
        times: vec![Time {
            start_time: 0,
            stop_time: 0,
            repeats: Vec::new(),
        }],
        time_zones: Vec::new(),
        key: None,
        attributes: vec![
            attr("control", Some("*".into())),
            attr("range", Some(range)),
        ],
        medias,
    };
    let mut out = Vec::new();
    let _ = session.write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
