//! A file given to `sluice-convert` (untrusted bytes): the first byte picks the reader (FLV,
//! MPEG-TS, DTSC, MP4; bit 2: read as a pipe rather than mapped), the rest is the file. Nothing panics; a reader either ends or names
//! a byte offset inside the file; what it reads goes through every writer without a panic.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use sluice_converters::read::{Demux, DtscReader, FlvReader, Input, Mp4Reader, ReadError, TsReader};
use sluice_converters::{write, Format};

fn reader(kind: u8, data: &[u8]) -> Result<Box<dyn Demux>, ReadError> {
    let bytes = bytes::Bytes::copy_from_slice(data);
    // Odd kinds read the bytes as a pipe, even ones as a mapped file (MP4: always mapped).
    let input = if kind & 4 != 0 {
        Input::stream(Box::new(Cursor::new(data.to_vec())))
    } else {
        Input::bytes(bytes)
    };
    Ok(match kind % 4 {
        0 => Box::new(FlvReader::open(input)?),
        1 => Box::new(TsReader::open(input)?),
        2 => Box::new(DtscReader::open(input)?),
        _ => Box::new(Mp4Reader::open(Input::bytes(bytes::Bytes::copy_from_slice(data)))?),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    let mut d = match reader(kind, file) {
        Ok(d) => d,
        Err(ReadError::Corrupt { offset, .. }) => {
            assert!(offset <= file.len() as u64, "offset {offset} past the end");
            return;
        }
        Err(ReadError::Io(_)) => return,
    };
    let tracks = d.tracks().to_vec();
    assert!(!tracks.is_empty());
    let mut packets = Vec::new();
    loop {
        match d.next_packet() {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => break,
            Err(ReadError::Corrupt { offset, .. }) => {
                assert!(offset <= file.len() as u64, "offset {offset} past the end");
                break;
            }
            Err(ReadError::Io(_)) => break,
        }
        assert!(packets.len() <= file.len(), "more packets than bytes");
    }
    for format in [Format::Flv, Format::Ts, Format::Mp4, Format::Fmp4, Format::Dtsc] {
        let mut out = Vec::new();
        let Ok(mut mux) = write::open(format, &tracks, &mut out, &std::env::temp_dir(), true, None)
        else {
            continue;
        };
        for p in &packets {
            if mux.packet(p, &mut out).is_err() {
                break;
            }
        }
        let _ = mux.finish(&mut out);
    }
});
