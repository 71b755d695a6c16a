//! Writes a small seed corpus for every fuzz target, built with dtsc's own encoders (nothing
//! downloaded): `cargo run --example make_seeds -- OUTDIR` makes OUTDIR/<target>/<name>.
//! scripts/fuzz.sh runs it before fuzzing; the seeds are not committed.

use std::path::{Path, PathBuf};

use dtsc::amf0::{self, Amf0};
use dtsc::flv::{self, TagKind};
use dtsc::model::{Codec, Track, TrackKind};
use dtsc::rtmp::chunk::{msg_type, ChunkEncoder};
use dtsc::wire::{self, Header, Value};
use dtsc::PacketRef;

/// A real x264 High-profile level 3.0 SPS (640x360, 25 fps, emulation prevention bytes),
/// and a PPS (from dtsc's FLV tests).
const SPS: [u8; 25] = [
    0x67, 0x64, 0x00, 0x1E, 0xAC, 0xD9, 0x40, 0xA0, 0x2F, 0xF9, 0x61, 0x00, 0x00, 0x03, 0x00, 0x01,
    0x00, 0x00, 0x03, 0x00, 0x32, 0x0F, 0x16, 0x2D, 0x96,
];
const PPS: [u8; 5] = [0x68, 0xEB, 0xE3, 0xCB, 0x22];
/// Baseline 320x240 without VUI (hand-made, constrained baseline level 1.3).
const SPS_BASELINE: [u8; 9] = [0x67, 0x42, 0xC0, 0x0D, 0xDA, 0x05, 0x07, 0xEC, 0x04];

fn avcc() -> Vec<u8> {
    let mut a = vec![1, SPS[1], SPS[2], SPS[3], 0xFF, 0xE1];
    a.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
    a.extend_from_slice(&SPS);
    a.push(1);
    a.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    a.extend_from_slice(&PPS);
    a
}

/// An AVCC access unit: IDR slice NAL with a 4-byte length.
fn avcc_frame(key: bool) -> Vec<u8> {
    let nal: &[u8] = if key {
        &[0x65, 0x88, 0x84, 0x00, 0x33, 0xFF]
    } else {
        &[0x41, 0x9A, 0x02, 0x04]
    };
    let mut v = (nal.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(nal);
    v
}

fn onmetadata() -> Vec<Amf0> {
    vec![
        Amf0::string("onMetaData"),
        Amf0::EcmaArray(vec![
            ("duration".into(), Amf0::Number(10.0)),
            ("width".into(), Amf0::Number(640.0)),
            ("height".into(), Amf0::Number(360.0)),
            ("framerate".into(), Amf0::Number(25.0)),
            ("videocodecid".into(), Amf0::Number(7.0)),
            ("audiocodecid".into(), Amf0::Number(10.0)),
            ("stereo".into(), Amf0::Boolean(true)),
            ("encoder".into(), Amf0::string("Lavf61")),
        ]),
    ]
}

fn amf(values: &[Amf0]) -> Vec<u8> {
    let mut out = Vec::new();
    amf0::encode_all(values, &mut out);
    out
}

/// FLV tag bodies of a short stream: metadata, both sequence headers, media.
fn flv_bodies() -> Vec<(TagKind, u32, Vec<u8>)> {
    let mut v = Vec::new();
    v.push((TagKind::Script, 0, amf(&onmetadata())));
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend_from_slice(&avcc());
    v.push((TagKind::Video, 0, seq));
    v.push((TagKind::Audio, 0, vec![0xAF, 0, 0x12, 0x10]));
    for i in 0..4u32 {
        let mut b = vec![if i == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 40];
        b.extend_from_slice(&avcc_frame(i == 0));
        v.push((TagKind::Video, i * 40, b));
        v.push((
            TagKind::Audio,
            i * 23,
            vec![0xAF, 1, 0x21, 0x10, 0x04, 0x60, 0x8C],
        ));
    }
    // End of sequence.
    v.push((TagKind::Video, 160, vec![0x17, 2, 0, 0, 0]));
    v
}

fn flv_file(bodies: &[(TagKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    flv::write_file_header(true, true, &mut out);
    for (k, ts, b) in bodies {
        flv::write_tag(*k, *ts, b, &mut out);
    }
    out
}

fn connect() -> Vec<Amf0> {
    vec![
        Amf0::string("connect"),
        Amf0::Number(1.0),
        Amf0::object([
            ("app", Amf0::string("live")),
            ("type", Amf0::string("nonprivate")),
            ("flashVer", Amf0::string("FMLE/3.0 (compatible; FMSc/1.0)")),
            ("tcUrl", Amf0::string("rtmp://localhost/live")),
        ]),
    ]
}

fn cmd(name: &str, txn: f64, args: &[Amf0]) -> Vec<u8> {
    let mut v = vec![Amf0::string(name), Amf0::Number(txn), Amf0::Null];
    v.extend_from_slice(args);
    amf(&v)
}

/// The chunk stream a publisher (ffmpeg-like) sends after the handshake.
fn publisher_stream(chunk_size: u32, extended_ts: bool) -> Vec<u8> {
    let mut e = ChunkEncoder::new();
    let mut out = Vec::new();
    e.set_chunk_size(chunk_size, &mut out).unwrap();
    e.write_message(3, msg_type::COMMAND_AMF0, 0, 0, &amf(&connect()), &mut out);
    e.write_message(
        2,
        msg_type::WINDOW_ACK_SIZE,
        0,
        0,
        &5_000_000u32.to_be_bytes(),
        &mut out,
    );
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("releaseStream", 2.0, &[Amf0::string("cam")]),
        &mut out,
    );
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("FCPublish", 3.0, &[Amf0::string("cam")]),
        &mut out,
    );
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("createStream", 4.0, &[]),
        &mut out,
    );
    e.write_message(
        4,
        msg_type::COMMAND_AMF0,
        1,
        0,
        &cmd(
            "publish",
            5.0,
            &[Amf0::string("cam?key=x"), Amf0::string("live")],
        ),
        &mut out,
    );
    let mut meta = amf(&[Amf0::string("@setDataFrame")]);
    meta.extend_from_slice(&amf(&onmetadata()));
    e.write_message(4, msg_type::DATA_AMF0, 1, 0, &meta, &mut out);
    let base: u64 = if extended_ts { 0x0100_0000 } else { 0 };
    for (kind, ts, body) in flv_bodies().into_iter().skip(1) {
        let (csid, typ) = match kind {
            TagKind::Audio => (4, msg_type::AUDIO),
            _ => (6, msg_type::VIDEO),
        };
        e.write_message(csid, typ, 1, base + u64::from(ts), &body, &mut out);
    }
    // A ping request, then a long message spanning many chunks.
    e.write_message(
        2,
        msg_type::USER_CONTROL,
        0,
        0,
        &[0, 6, 0, 0, 1, 0],
        &mut out,
    );
    let mut big = vec![0x27, 1, 0, 0, 0];
    big.extend_from_slice(&[0x55; 700]);
    e.write_message(6, msg_type::VIDEO, 1, base + 200, &big, &mut out);
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("FCUnpublish", 6.0, &[Amf0::string("cam")]),
        &mut out,
    );
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("deleteStream", 7.0, &[Amf0::Number(1.0)]),
        &mut out,
    );
    out
}

/// The chunk stream a player sends after the handshake.
fn player_stream() -> Vec<u8> {
    let mut e = ChunkEncoder::new();
    let mut out = Vec::new();
    e.write_message(3, msg_type::COMMAND_AMF0, 0, 0, &amf(&connect()), &mut out);
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("createStream", 2.0, &[]),
        &mut out,
    );
    e.write_message(
        3,
        msg_type::COMMAND_AMF0,
        0,
        0,
        &cmd("getStreamLength", 3.0, &[Amf0::string("cam")]),
        &mut out,
    );
    e.write_message(
        8,
        msg_type::COMMAND_AMF0,
        1,
        0,
        &cmd("play", 4.0, &[Amf0::string("cam"), Amf0::Number(-2000.0)]),
        &mut out,
    );
    e.write_message(
        2,
        msg_type::USER_CONTROL,
        0,
        0,
        &[0, 3, 0, 0, 0, 1, 0, 0, 0x0B, 0xB8],
        &mut out,
    );
    e.write_message(
        8,
        msg_type::COMMAND_AMF0,
        1,
        0,
        &cmd("closeStream", 0.0, &[]),
        &mut out,
    );
    // AMF3 command envelope (format byte 0, then AMF0).
    let mut c = vec![0];
    c.extend_from_slice(&cmd("deleteStream", 5.0, &[Amf0::Number(1.0)]));
    e.write_message(3, msg_type::COMMAND_AMF3, 0, 0, &c, &mut out);
    out
}

fn chunk_variety() -> Vec<u8> {
    // Several chunk streams, 2- and 3-byte csids, fmt 1/2/3 headers, extended timestamps,
    // an Abort and a zero-length message.
    let mut e = ChunkEncoder::new();
    let mut out = Vec::new();
    for (i, csid) in [3u32, 63, 64, 319, 320, 65599].iter().enumerate() {
        let ts = [0u64, 33, 0xFF_FFFF, 0x1_0000_0000, 66, 99][i];
        e.write_message(*csid, msg_type::VIDEO, 1, ts, &vec![i as u8; 300], &mut out);
        e.write_message(
            *csid,
            msg_type::VIDEO,
            1,
            ts + 40,
            &vec![i as u8; 300],
            &mut out,
        );
        e.write_message(
            *csid,
            msg_type::VIDEO,
            1,
            ts + 80,
            &vec![i as u8; 300],
            &mut out,
        );
    }
    e.write_message(2, msg_type::ABORT, 0, 0, &3u32.to_be_bytes(), &mut out);
    e.write_message(5, msg_type::AUDIO, 1, 5, &[], &mut out);
    e.set_chunk_size(4096, &mut out).unwrap();
    e.write_message(5, msg_type::AUDIO, 1, 10, &vec![7; 5000], &mut out);
    out
}

fn tracks() -> Vec<Track> {
    let mut v = Track::new(1, TrackKind::Video, Codec::H264);
    v.init = avcc();
    v.width = 640;
    v.height = 360;
    v.fpks = 25_000;
    v.bps = 100_000;
    v.lastms = 9960;
    let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
    a.init = vec![0x12, 0x10];
    a.rate = 44_100;
    a.channels = 2;
    a.bits = 16;
    a.lang = Some("eng".into());
    vec![v, a]
}

fn dtsc_stream() -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_header(
        &Header {
            live: true,
            unixzero: Some(1_700_000_000_000),
            tracks: tracks(),
        },
        &mut out,
    );
    let frame = avcc_frame(true);
    let packets = [
        PacketRef {
            track: 1,
            dts: 0,
            offset: 80,
            keyframe: true,
            bpos: 13,
            data: &frame,
        },
        PacketRef {
            track: 2,
            dts: 23,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &[0x21, 0x10],
        },
        PacketRef {
            track: 1,
            dts: 40,
            offset: -40,
            keyframe: false,
            bpos: 0,
            data: &[],
        },
    ];
    for p in &packets {
        wire::write_packet(p, &mut out);
    }
    wire::write_command(
        &Value::obj([
            ("cmd", Value::str("hi")),
            ("version", Value::str("Sluice")),
            (
                "list",
                Value::Array(vec![Value::Int(-1), Value::Double(0.5), Value::Null]),
            ),
        ]),
        &mut out,
    );
    // A legacy DTPD packet: one object with trackid, time, data.
    let legacy = Value::obj([
        ("trackid", Value::Int(1)),
        ("time", Value::Int(80)),
        ("keyframe", Value::Int(1)),
        ("data", Value::Str(frame.clone())),
    ]);
    let mut body = Vec::new();
    wire::encode_value(&legacy, &mut body);
    out.extend_from_slice(b"DTPD");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A short MPEG-TS of the seed tracks made by Sluice's muxer (PAT, PMT, H.264 and AAC PES);
/// the first byte is the fuzz target's chunk-size byte.
fn ts_stream(chunk: u8) -> Vec<u8> {
    let tracks = tracks();
    let mut mux = dtsc::ts::TsMuxer::continuous(&tracks);
    let mut out = vec![chunk];
    mux.write_psi(&mut out);
    let key = avcc_frame(true);
    let delta = avcc_frame(false);
    for i in 0..6u64 {
        let data = if i % 3 == 0 { &key } else { &delta };
        let v = PacketRef {
            track: 1,
            dts: i * 40,
            offset: 40,
            keyframe: i % 3 == 0,
            bpos: 0,
            data,
        };
        mux.write_packet(&v, false, &mut out).unwrap();
        let a = PacketRef {
            track: 2,
            dts: i * 23,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &[0x21, 0x10, 7],
        };
        mux.write_packet(&a, false, &mut out).unwrap();
    }
    out
}

/// The server's side of an RTSP play session for the `rtsp_pull` target: responses to
/// OPTIONS, DESCRIBE (an SDP with H.264 and AAC), two SETUPs and PLAY, then interleaved RTP
/// of a few access units and a sender report; cut into the target's length-byte chunks.
fn rtsp_session(tcp: bool) -> Vec<u8> {
    let t = tracks();
    let mut server = Vec::new();
    let reply = |cseq: u32, extra: &str, body: &str| {
        format!(
            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 {}\r\na=fmtp:96 {}\r\na=control:trackID=1\r\n\
         m=audio 0 RTP/AVP 97\r\na=rtpmap:97 {}\r\na=fmtp:97 {}\r\na=control:trackID=2\r\n",
        dtsc::rtp::rtpmap(&t[0]).unwrap(),
        dtsc::rtp::fmtp(&t[0]).unwrap(),
        dtsc::rtp::rtpmap(&t[1]).unwrap(),
        dtsc::rtp::fmtp(&t[1]).unwrap(),
    );
    server.extend(
        reply(
            1,
            "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER\r\n",
            "",
        )
        .bytes(),
    );
    server.extend(
        reply(
            2,
            "Content-Base: rtsp://127.0.0.1:554/cam/\r\nContent-Type: application/sdp\r\n",
            &sdp,
        )
        .bytes(),
    );
    let tr = |a: u8| {
        if tcp {
            format!(
                "Transport: RTP/AVP/TCP;unicast;interleaved={a}-{}\r\n",
                a + 1
            )
        } else {
            format!(
                "Transport: RTP/AVP;unicast;client_port=5000-5001;server_port={}-{}\r\n",
                6000 + u16::from(a),
                6001 + u16::from(a)
            )
        }
    };
    server.extend(reply(3, &format!("Session: 1234;timeout=30\r\n{}", tr(0)), "").bytes());
    server.extend(reply(4, &format!("Session: 1234\r\n{}", tr(2)), "").bytes());
    server.extend(reply(5, "Session: 1234\r\nRTP-Info: url=trackID=1;seq=0\r\n", "").bytes());
    let mut pv = dtsc::rtp::Packetizer::new(&t[0], 96, 1, 0, 0).unwrap();
    let mut pa = dtsc::rtp::Packetizer::new(&t[1], 97, 2, 0, 0).unwrap();
    for i in 0..6u64 {
        let v = avcc_frame(i % 3 == 0);
        let a = [0x21u8, 0x10, 0x05, 0x00];
        for (p, ch, data, dts) in [(&mut pv, 0u8, &v[..], 40 * i), (&mut pa, 2, &a[..], 23 * i)] {
            let pr = PacketRef {
                track: 1,
                dts,
                offset: 0,
                keyframe: i % 3 == 0,
                bpos: 0,
                data,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            for sp in spans {
                server.extend_from_slice(&[b'$', ch, 0, sp.len() as u8]);
                server.extend_from_slice(&out[sp]);
            }
        }
    }
    let mut sr = Vec::new();
    dtsc::rtp::sender_report(
        pv.ssrc(),
        (3_900_000_000u64 << 32) | 1,
        1234,
        6,
        600,
        "cam",
        &mut sr,
    );
    server.extend_from_slice(&[b'$', 1, 0, sr.len() as u8]);
    server.extend_from_slice(&sr);
    let mut seed = vec![u8::from(!tcp)];
    for c in server.chunks(64) {
        seed.push(c.len().div_ceil(8) as u8);
        seed.extend_from_slice(c);
    }
    seed
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));

    // rtsp_pull
    write(&dir, "rtsp_pull", "session_tcp", &rtsp_session(true));
    write(&dir, "rtsp_pull", "session_udp", &rtsp_session(false));

    // amf0_decode
    write(&dir, "amf0_decode", "connect", &amf(&connect()));
    write(&dir, "amf0_decode", "onmetadata", &amf(&onmetadata()));
    write(
        &dir,
        "amf0_decode",
        "misc",
        &amf(&[
            Amf0::StrictArray(vec![Amf0::Null, Amf0::Undefined, Amf0::Boolean(false)]),
            Amf0::Date(1.7e12, -60),
            Amf0::Number(f64::NAN),
            Amf0::object([("nested", Amf0::object([("a", Amf0::EcmaArray(vec![]))]))]),
        ]),
    );
    // Long string 0x0C, XML 0x0F, typed object 0x10, unsupported 0x0D, by hand.
    write(
        &dir,
        "amf0_decode",
        "rare_markers",
        &[
            0x0C, 0, 0, 0, 3, b'a', b'b', b'c', 0x0F, 0, 0, 0, 2, b'<', b'>', 0x10, 0, 1, b'C', 0,
            1, b'x', 0x05, 0, 0, 0x09, 0x0D,
        ],
    );

    // ts_demux
    write(&dir, "ts_demux", "stream_188.ts", &ts_stream(62));
    write(&dir, "ts_demux", "stream_7.ts", &ts_stream(2));

    // flv_tags
    let bodies = flv_bodies();
    write(&dir, "flv_tags", "stream.flv", &flv_file(&bodies));
    let mut bare = Vec::new();
    for (k, ts, b) in &bodies[..3] {
        flv::write_tag(*k, *ts, b, &mut bare);
    }
    write(&dir, "flv_tags", "bare_tags", &bare);
    let mut mp3 = Vec::new();
    flv::write_file_header(true, false, &mut mp3);
    flv::write_tag(
        TagKind::Audio,
        0,
        &[0x2F, 0xFF, 0xFB, 0x90, 0x64, 0, 0, 0],
        &mut mp3,
    );
    flv::write_tag(
        TagKind::Audio,
        26,
        &[0x2F, 0xFF, 0xFB, 0x90, 0x64, 1, 1, 1],
        &mut mp3,
    );
    write(&dir, "flv_tags", "mp3.flv", &mp3);

    // rtmp_chunks: first byte = piece size - 1.
    for (name, split, stream) in [
        ("publisher", 0u8, publisher_stream(4096, false)),
        ("publisher_ext_ts", 127, publisher_stream(128, true)),
        ("variety", 9, chunk_variety()),
    ] {
        let mut s = vec![split];
        s.extend_from_slice(&stream);
        write(&dir, "rtmp_chunks", name, &s);
    }

    // rtmp_session: first byte = accept flag (top bit clear) | piece size - 1.
    for (name, ctl, stream) in [
        ("publish_accept", 0x3Fu8, publisher_stream(4096, false)),
        ("publish_reject", 0x80, publisher_stream(60, true)),
        ("play_accept", 0x10, player_stream()),
        ("play_reject", 0xFF, player_stream()),
    ] {
        let mut s = vec![ctl];
        s.extend_from_slice(&stream);
        write(&dir, "rtmp_session", name, &s);
    }

    // dtsc_frames
    write(&dir, "dtsc_frames", "stream.dtsc", &dtsc_stream());

    // h264_sps: an SPS, an avcC, and (first byte = length size) an AVCC payload.
    write(&dir, "h264_sps", "sps_high", &SPS);
    write(&dir, "h264_sps", "sps_baseline", &SPS_BASELINE);
    write(&dir, "h264_sps", "avcc", &avcc());
    let mut au = vec![4];
    au.extend_from_slice(&avcc_frame(true));
    au.extend_from_slice(&[0, 0, 0, 0]);
    au.extend_from_slice(&avcc_frame(false));
    write(&dir, "h264_sps", "avcc_payload", &au);
    // An HEVC SPS from x265 (640x360, VUI timing 25 fps), for hevc::parse_sps.
    let hevc_sps: Vec<u8> =
        "42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321"
            .as_bytes()
            .chunks(2)
            .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
            .collect();
    write(&dir, "h264_sps", "hevc_sps_x265", &hevc_sps);

    // aac_asc: LC 44.1 kHz stereo, LC 48 kHz mono, HE-AAC (SBR), HE-AACv2 (PS),
    // explicit 24-bit rate, escaped object type.
    for (name, asc) in [
        ("lc_44100_2", &[0x12u8, 0x10][..]),
        ("lc_48000_1", &[0x11, 0x88]),
        ("he_aac", &[0x2B, 0x92, 0x08, 0x00]),
        ("he_aac_v2", &[0xEB, 0x09, 0x88, 0x00]),
        ("explicit_rate", &[0x17, 0x80, 0x3E, 0x80, 0x10]),
        ("escaped_type", &[0xF8, 0x44, 0x40]),
    ] {
        write(&dir, "aac_asc", name, asc);
    }

    // http_outputs: request URLs of the Smooth, HDS and LL-HLS outputs, and a fragment.
    write(
        &dir,
        "http_outputs",
        "smooth",
        b"/cmaf/live/QualityLevels(524849)/Fragments(video=20000000)",
    );
    write(&dir, "http_outputs", "hds", b"/dynamic/live/1_2_Seg1-Frag7");
    write(&dir, "http_outputs", "llhls", b"_HLS_msn=12&_HLS_part=3");
    // moof { mfhd(1) } then an empty mdat.
    let mut moof = vec![0, 0, 0, 24];
    moof.extend_from_slice(b"moof\0\0\0\x10mfhd\0\0\0\0\0\0\0\x01\0\0\0\x08mdat");
    write(&dir, "http_outputs", "moof", &moof);
    // An index of a short video + audio stream.
    let packets: Vec<dtsc::Packet> = (0..60u64)
        .map(|i| dtsc::Packet {
            track: 1 + (i % 2) as u32,
            dts: i * 20,
            offset: if i % 2 == 0 { 40 } else { 0 },
            keyframe: i % 20 == 0,
            bpos: 13 + i * 100,
            data: bytes::Bytes::from(vec![0u8; 10 + i as usize]),
        })
        .collect();
    // MP4: a progressive file, and an init segment followed by one fragment (read both
    // ways by the mp4_read target).
    let refs: Vec<PacketRef> = packets.iter().map(|p| p.as_ref()).collect();
    let mut mp4 = Vec::new();
    if dtsc::mp4::write_progressive(&tracks(), &refs, &mut mp4).is_ok() {
        write(&dir, "mp4_read", "progressive.mp4", &mp4);
    }
    let mut fmp4 = Vec::new();
    dtsc::mp4::write_init(&tracks(), &mut fmp4).unwrap();
    let mut frag = dtsc::mp4::FragmentBuilder::new(&tracks()).unwrap();
    for p in &refs {
        frag.add(p).unwrap();
    }
    frag.finish(1, &mut fmp4).unwrap();
    write(&dir, "mp4_read", "init_and_fragment.mp4", &fmp4);
    let header = Header {
        live: false,
        unixzero: None,
        tracks: tracks(),
    };
    let index = dtsc::dtsh::build(&header.tracks, &packets);
    write(
        &dir,
        "dtsh_decode",
        "index.dtsh",
        &dtsc::dtsh::encode(&header, &index),
    );

    // analyse_files: the first byte picks the analyser (0 FLV, 1 TS, 3 MP4, 4 DTSC).
    let tag = |kind: u8, bytes: &[u8]| [&[kind][..], bytes].concat();
    write(
        &dir,
        "analyse_files",
        "flv",
        &tag(0, &flv_file(&flv_bodies())),
    );
    write(&dir, "analyse_files", "ts", &tag(1, &ts_stream(62)));
    write(&dir, "analyse_files", "mp4", &tag(3, &fmp4));
    write(&dir, "analyse_files", "dtsc", &tag(4, &dtsc_stream()));
    // convert_read: the first byte picks the reader (0 FLV, 1 TS, 2 DTSC, 3 MP4).
    write(
        &dir,
        "convert_read",
        "flv",
        &tag(0, &flv_file(&flv_bodies())),
    );
    write(&dir, "convert_read", "ts", &tag(1, &ts_stream(62)));
    write(&dir, "convert_read", "dtsc", &tag(2, &dtsc_stream()));
    write(&dir, "convert_read", "mp4", &tag(3, &mp4));
    write(&dir, "convert_read", "fmp4", &tag(3, &fmp4));
    // hls_checker: two loads of a live playlist (a segment added, one removed), then an
    // empty init segment and a TS segment, separated by NUL bytes.
    let mut hls = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:2.0,\n4.ts\n#EXTINF:2.0,\n5.ts\n\0#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXTINF:2.0,\n5.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\n6.ts\n#EXT-X-ENDLIST\n\0\0".to_vec();
    hls.extend_from_slice(&ts_stream(62));
    write(&dir, "hls_checker", "live_then_ended", &hls);
}
