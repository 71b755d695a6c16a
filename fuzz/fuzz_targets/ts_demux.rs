//! The MPEG-TS demuxer on untrusted bytes (a TS push or file): the input fed in chunks whose
//! sizes come from its first byte, then finished. Every packet it returns belongs to an
//! announced track, video packets are length-prefixed NAL units that split cleanly, and the
//! counters never exceed the input. Also `hevc::parse_sps` / `build_hvcc` and
//! `mp3::parse_header` on the same bytes.
#![no_main]

use dtsc::tsdemux::{TsDemuxer, TsEvent};
use dtsc::{h264, hevc, mp3, TrackKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(b).max(1) * 3;
    let mut d = TsDemuxer::new();
    let mut events = Vec::new();
    for c in rest.chunks(chunk) {
        d.push(c, &mut events);
    }
    d.finish(&mut events);
    let st = d.stats();
    assert!(st.packets <= (rest.len() / 188) as u64);
    for e in &events {
        if let TsEvent::Packet(p) = e {
            let t = d
                .tracks()
                .iter()
                .find(|t| t.id == p.track)
                .expect("packet of a known track");
            if t.kind == TrackKind::Video {
                for n in h264::nal_units(&p.data, 4) {
                    n.expect("demuxed video is well-formed AVCC");
                }
            }
        }
    }
    if let Ok(sps) = hevc::parse_sps(rest) {
        assert!(sps.max_sub_layers <= 7);
        let rec =
            hevc::build_hvcc(&[], &[rest.to_vec()], &[]).expect("a parsed SPS builds a record");
        hevc::parse_hvcc(&rec).expect("a built record parses");
    }
    if let Some(h) = mp3::parse_header(rest) {
        assert!(h.frame_len >= 4);
    }
});
