//! A `.dtsh` index beside a file source (untrusted bytes: a MistServer-written or damaged
//! file) read by `dtsc::dtsh::decode`: nothing panics, and what decodes encodes back to a
//! file that decodes to the same header and index.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, index)) = dtsc::dtsh::decode(data) {
        let n: usize = index.iter().map(|ix| ix.packets().count()).sum();
        assert!(n <= data.len());
        let again = dtsc::dtsh::encode(&header, &index);
        let (h2, i2) = dtsc::dtsh::decode(&again).expect("re-encoded index decodes");
        assert_eq!(i2, index);
        assert_eq!(h2.tracks.len(), header.tracks.len());
    }
});
