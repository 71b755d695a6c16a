//! An MP4/MOV file source (untrusted bytes) read by `dtsc::mp4demux::read`: nothing panics,
//! and every packet's payload lies inside the file at its `bpos`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = bytes::Bytes::copy_from_slice(data);
    if let Ok((tracks, packets)) = dtsc::mp4demux::read(&file) {
        assert!(!tracks.is_empty());
        for p in &packets {
            let at = p.bpos as usize;
            assert_eq!(&data[at..at + p.data.len()], &p.data[..]);
        }
    }
});
