//! FLV demuxing as a file reader and the RTMP ingest do it: the file header, then tags until
//! the bytes run out, each fed to `FlvIngest::push_tag` and to the RTMP publish's
//! `FlvToDtsc`, whose DTSC frames must read back. Tracks the ingest builds are then given to
//! the FLV / metadata writers the outputs use, which must not panic on them either.
#![no_main]

use dtsc::amf0;
use dtsc::flv::{self, FlvIngest, FlvToDtsc, IngestEvent};
use dtsc::TrackKind;
use libfuzzer_sys::fuzz_target;

fn exercise_writers(ingest: &FlvIngest) {
    let _ = ingest.ready();
    let _ = ingest.awaiting_tracks();
    let mut out = Vec::new();
    for t in ingest.tracks() {
        match t.kind {
            TrackKind::Video => {
                let _ = flv::video_sequence_header(t, &mut out);
                let _ = flv::video_body_header(&t.codec, true, -5, &mut out);
            }
            TrackKind::Audio => {
                let _ = flv::audio_sequence_header(t, &mut out);
                let _ = flv::audio_body_header(t, &mut out);
            }
            _ => {}
        }
    }
    let meta = flv::on_metadata(ingest.tracks(), None);
    let mut body = Vec::new();
    amf0::encode_all(&meta, &mut body);
    let back = amf0::decode_all(&body).expect("onMetaData must be valid AMF0");
    assert_eq!(back.len(), meta.len());
}

fuzz_target!(|data: &[u8]| {
    // Without an FLV signature, read the bytes as bare tags (what an RTMP-fed ingest sees
    // after the chunk layer), so that inputs need not carry the 13-byte header.
    let mut rest = match flv::parse_file_header(data) {
        Ok(Some((_, used))) => {
            assert!(used <= data.len());
            &data[used..]
        }
        Ok(None) => return,
        Err(_) => data,
    };
    let mut ingest = FlvIngest::new();
    let mut to_dtsc = FlvToDtsc::new();
    let mut frames = Vec::new();
    let mut tags = 0usize;
    while let Ok(Some((tag, used))) = flv::parse_tag(rest) {
        assert!(used >= flv::TAG_HEADER_LEN + flv::PREV_TAG_SIZE_LEN && used <= rest.len());
        assert_eq!(
            used,
            tag.body.len() + flv::TAG_HEADER_LEN + flv::PREV_TAG_SIZE_LEN
        );
        let body = tag.body;
        let _ = to_dtsc.push_tag(tag.kind, u64::from(tag.timestamp), body, &mut frames);
        match ingest.push_tag(tag.kind, u64::from(tag.timestamp), body) {
            Ok(Some(IngestEvent::Packet(p))) => {
                // The payload is borrowed from the tag body.
                let lo = body.as_ptr() as usize;
                let hi = lo + body.len();
                let p_lo = p.data.as_ptr() as usize;
                assert!(p.data.is_empty() || (p_lo >= lo && p_lo + p.data.len() <= hi));
                let _ = p.pts();
            }
            Ok(Some(IngestEvent::TracksChanged)) => exercise_writers(&ingest),
            Ok(None) | Err(_) => {}
        }
        rest = &rest[used..];
        tags += 1;
        if tags > 4096 {
            break;
        }
    }
    exercise_writers(&ingest);
    // What the publish wrote is DTSC a buffer reads: whole frames, a header first.
    let mut at = 0;
    while at < frames.len() {
        let (frame, used) = dtsc::wire::parse_frame(&frames[at..])
            .expect("FlvToDtsc wrote a frame that does not parse")
            .expect("FlvToDtsc wrote a cut frame");
        if at == 0 {
            assert!(matches!(frame, dtsc::wire::Frame::Header(_)));
        }
        at += used;
    }
});
