//! An MP4/MOV file source (untrusted bytes) read by `dtsc::mp4demux::read`: nothing panics,
//! and every packet's payload lies inside the file at its `bpos`. The same bytes as a
//! fragmented MP4 (HLS fMP4 pulls): an init segment read by `Fragmented::read_init`, then as
//! a media segment against it; every payload is a slice of the segment.
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
    if let Ok(f) = dtsc::mp4demux::Fragmented::read_init(data) {
        let mut packets = Vec::new();
        if f.read_segment(&file, &mut packets).is_ok() {
            assert!(packets.windows(2).all(|w| w[0].dts <= w[1].dts));
            assert!(packets.iter().all(|p| p.data.len() <= data.len()));
        }
    }
});
