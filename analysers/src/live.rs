//! The thin blocking IO loops around the sans-IO live analysers: TCP for RTMP
//! ([`crate::rtmp`]), RTSP ([`crate::rtsp`]) and DTSC ([`crate::dtsc`]), HTTP with `ureq`
//! for HLS ([`crate::hls`]). Each reads a clock and a socket, feeds the analyser, and
//! returns its report; nothing here interprets bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::hls::{parse_playlist, resolve_uri, Parsed};

use crate::dtsc::{DtscReader, DtscReport};
use crate::hls::{HlsReport, MediaChecker, MediaReport};
use crate::rtmp::{RtmpReport, RtmpWatcher};
use crate::rtsp::RtspReport;

/// How long a connect or a quiet socket may take before the session is given up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest playlist read, bytes.
const MAX_PLAYLIST: u64 = 4 << 20;
/// Largest segment read, bytes.
const MAX_SEGMENT: u64 = 256 << 20;
/// Most segments fetched from one load of a playlist (the newest ones).
const MAX_SEGMENTS_PER_LOAD: usize = 60;

fn connect(host: &str, port: u16) -> Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{host}: no address"))?;
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {host}:{port}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads what arrives within `wait` (at most 64 KiB); an empty vector on a timeout,
/// an error when the peer closed.
fn read_some(s: &mut TcpStream, wait: Duration) -> Result<Option<Vec<u8>>> {
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
    let mut buf = vec![0u8; 64 << 10];
    match s.read(&mut buf) {
        Ok(0) => Ok(None),
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(Some(Vec::new()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `dtsc://HOST[:PORT]/STREAM`: sends `play`, reads the server's `hi`, then the header
/// and packets for `duration` or `count` packets (docs/DTSC.md "TCP protocol").
pub fn dtsc(url: &str, duration: Duration, count: Option<usize>) -> Result<DtscReport> {
    let rest = url
        .strip_prefix("dtsc://")
        .ok_or_else(|| anyhow!("not a dtsc:// URL"))?;
    let (hostport, stream) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("{url}: no stream name"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().context("port")?),
        None => (hostport, 4200),
    };
    if stream.is_empty() {
        bail!("{url}: no stream name");
    }
    let mut s = connect(host, port)?;
    s.write_all(&crate::dtsc::play_command(stream))?;
    let mut reader = DtscReader::new();
    let start = Instant::now();
    while start.elapsed() < duration && count.is_none_or(|c| reader.packet_count() < c) {
        match read_some(
            &mut s,
            duration
                .saturating_sub(start.elapsed())
                .min(Duration::from_millis(200)),
        )? {
            None => break,
            Some(b) => reader.push(&b),
        }
        if reader.report().error.is_some() {
            break;
        }
    }
    // A frame cut by the end of the watch is not an error of the stream.
    let mut r = reader.report().clone();
    if let Some(c) = count {
        r.packets.truncate(c);
    }
    Ok(r)
}

/// `rtmp://HOST[:PORT]/APP/STREAM`: plays the stream with `dtsc::rtmp::client::RtmpClient`
/// for `duration`, `count` media messages, or until the server ends it.
pub fn rtmp(url: &str, duration: Duration, count: Option<usize>) -> Result<RtmpReport> {
    use dtsc::machine::{Input, Machine, Output};
    use dtsc::rtmp::client::RtmpClient;
    let (host, port, app, name, tc) = RtmpClient::parse_url(url)
        .ok_or_else(|| anyhow!("{url}: not rtmp://HOST[:PORT]/APP/STREAM"))?;
    let mut s = connect(&host, port)?;
    let mut client = RtmpClient::player(&tc, &app, &name, 0x5eed);
    client.set_observe_messages(true);
    let mut w = RtmpWatcher::new(url);
    let start = Instant::now();
    client.start(0);
    let mut last_data = Instant::now();
    loop {
        let now_ms = start.elapsed().as_millis() as u64;
        loop {
            match client.poll_output() {
                Output::Transmit(out) => s.write_all(&out)?,
                Output::Event(ev) => w.event(ev, now_ms),
                Output::Timeout(_) => break,
            }
        }
        if w.ended() || start.elapsed() >= duration || count.is_some_and(|c| w.media_count() >= c) {
            break;
        }
        match read_some(&mut s, Duration::from_millis(200)) {
            Ok(None) => {
                w.fail("the server closed the connection".into());
                break;
            }
            Ok(Some(b)) if b.is_empty() => {
                if last_data.elapsed() > IO_TIMEOUT {
                    w.fail(format!("nothing received for {} s", IO_TIMEOUT.as_secs()));
                    break;
                }
            }
            Ok(Some(b)) => {
                last_data = Instant::now();
                if let Err(e) = client.handle_input(Instant::now(), Input::Bytes(&b)) {
                    w.fail(format!("RTMP: {e}"));
                    break;
                }
            }
            Err(e) => {
                w.fail(format!("socket: {e}"));
                break;
            }
        }
    }
    Ok(w.finish())
}

/// `rtsp://HOST[:PORT]/PATH`: OPTIONS, then DESCRIBE, and the SDP.
pub fn rtsp(url: &str) -> Result<RtspReport> {
    use rtsp_types::Method;
    let rest = url
        .strip_prefix("rtsp://")
        .ok_or_else(|| anyhow!("not an rtsp:// URL"))?;
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().context("port")?),
        None => (hostport, 554),
    };
    let mut s = connect(host, port)?;
    let mut r = RtspReport {
        url: url.to_string(),
        ..RtspReport::default()
    };
    for (cseq, method) in [(1, Method::Options), (2, Method::Describe)] {
        let req = crate::rtsp::request(method.clone(), url, cseq).map_err(|e| anyhow!(e))?;
        s.write_all(&req)?;
        let mut buf = Vec::new();
        let start = Instant::now();
        let (status, headers, body, _) = loop {
            if let Some(p) = crate::rtsp::parse_response(&buf).map_err(|e| anyhow!(e))? {
                break p;
            }
            if start.elapsed() > IO_TIMEOUT {
                bail!("no answer to {method:?} within {} s", IO_TIMEOUT.as_secs());
            }
            match read_some(&mut s, Duration::from_millis(200))? {
                None => bail!("the server closed the connection during {method:?}"),
                Some(b) => buf.extend_from_slice(&b),
            }
        };
        if method == Method::Options {
            r.options(status, &headers);
        } else {
            r.describe(status, &headers, &body);
        }
    }
    Ok(r)
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(IO_TIMEOUT))
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(true)
        .build()
        .into()
}

fn http_get(agent: &ureq::Agent, url: &str, limit: u64) -> Result<Vec<u8>> {
    let mut resp = agent.get(url).call().map_err(|e| anyhow!("{url}: {e}"))?;
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| anyhow!("{url}: {e}"))
}

/// The HLS playlist at `url`: a master playlist's variants (each, or only `variant`),
/// each media playlist watched for `duration` (or until `EXT-X-ENDLIST`), reloaded as
/// RFC 8216 §6.3.4 says, its new segments fetched and checked.
pub fn hls(url: &str, duration: Duration, variant: Option<usize>) -> Result<HlsReport> {
    let agent = http_agent();
    let text = http_get(&agent, url, MAX_PLAYLIST)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let mut report = HlsReport {
        url: url.to_string(),
        ..HlsReport::default()
    };
    let media_urls: Vec<String> = match parse_playlist(&text).map_err(|e| anyhow!("{url}: {e}"))? {
        Parsed::Master(v) => {
            let urls: Vec<String> = v.iter().map(|(_, u)| resolve_uri(url, u)).collect();
            report.variants = Some(v);
            match variant {
                Some(i) => vec![urls
                    .get(i)
                    .cloned()
                    .ok_or_else(|| anyhow!("no variant {i}"))?],
                None => urls,
            }
        }
        Parsed::Media(_) => vec![url.to_string()],
    };
    let reports: Vec<MediaReport> = std::thread::scope(|sc| {
        let handles: Vec<_> = media_urls
            .iter()
            .map(|u| {
                let agent = agent.clone();
                sc.spawn(move || watch_media(&agent, u, duration))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a variant's thread"))
            .collect()
    });
    for m in &reports {
        for v in &m.violations {
            let mut v = v.clone();
            v.message = format!("{}: {}", m.url, v.message);
            report.violations.push(v);
        }
        if report.error.is_none() {
            if let Some(e) = &m.error {
                report.error = Some(crate::ReadError::at(
                    e.offset,
                    format!("{}: {}", m.url, e.message),
                ));
            }
        }
    }
    report.media = reports;
    Ok(report)
}

fn watch_media(agent: &ureq::Agent, url: &str, duration: Duration) -> MediaReport {
    let mut c = MediaChecker::new(url);
    let start = Instant::now();
    let mut next: Option<u64> = None;
    let mut map: Option<String> = None;
    loop {
        let loaded = Instant::now();
        let text = match http_get(agent, url, MAX_PLAYLIST) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                c.fail(&e.to_string());
                break;
            }
        };
        let Some(pl) = c.playlist(&text, start.elapsed().as_millis() as u64) else {
            break;
        };
        if let Some(m) = &pl.map_uri {
            let m = resolve_uri(url, m);
            if map.as_deref() != Some(m.as_str()) {
                match http_get(agent, &m, MAX_SEGMENT) {
                    Ok(b) => c.init_segment(&b),
                    Err(e) => {
                        c.fail(&e.to_string());
                        break;
                    }
                }
                map = Some(m);
            }
        }
        let skip = pl.segments.len().saturating_sub(MAX_SEGMENTS_PER_LOAD);
        for (msn, ms, uri) in pl.segments.iter().skip(skip) {
            if next.is_some_and(|n| *msn < n) {
                continue;
            }
            match http_get(agent, &resolve_uri(url, uri), MAX_SEGMENT) {
                Ok(b) => c.segment(*msn, uri, *ms, &b),
                // A live segment may leave the window before it is fetched.
                Err(_) if !pl.ended && *msn < pl.segments.last().map_or(0, |s| s.0) => {}
                Err(e) => {
                    c.fail(&e.to_string());
                    return c.finish();
                }
            }
            next = Some(msn.saturating_add(1));
        }
        if pl.ended || start.elapsed() >= duration {
            break;
        }
        let wait = Duration::from_millis(c.reload_after_ms());
        let until = loaded + wait;
        let end = start + duration;
        std::thread::sleep(until.min(end).saturating_duration_since(Instant::now()));
        if Instant::now() >= end {
            break;
        }
    }
    c.finish()
}
