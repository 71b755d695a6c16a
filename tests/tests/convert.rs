//! The converter and analyser CLIs on the real fixture: FLV → DTSC → FLV keeps every packet
//! and every composition offset, as ffprobe (not our code) counts them.
use sluice_e2e::*;
use std::process::Command;

fn bin(name: &str) -> std::path::PathBuf {
    sluice_bin().with_file_name(name)
}

#[test]
fn flv_to_dtsc_and_back_keeps_every_packet() {
    require_tools(&["ffprobe"]);
    let dir = unique_temp_dir("convert");
    let dtsc = dir.join("f.dtsc");
    let back = dir.join("f.flv");
    for (from, to) in [
        (fixture("bframes.flv"), dtsc.clone()),
        (dtsc.clone(), back.clone()),
    ] {
        let st = Command::new(bin("sluice-convert"))
            .arg(&from)
            .arg(&to)
            .status()
            .expect("run sluice-convert");
        assert!(
            st.success(),
            "sluice-convert {} {}",
            from.display(),
            to.display()
        );
    }
    let head = std::fs::read(&dtsc).unwrap();
    assert_eq!(
        &head[..4],
        b"DTSC",
        "a .dtsc file starts with its header frame"
    );

    let out = Command::new(bin("sluice-analyse"))
        .arg("-V")
        .arg(&dtsc)
        .output()
        .expect("run sluice-analyse");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("250 packets, 5 keyframes"), "{text}");
    assert!(text.contains("432 packets"), "{text}");

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,pts,dts,flags",
            "-of",
            "csv",
        ])
        .arg(&back)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    let video: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("packet,video"))
        .collect();
    let audio = text
        .lines()
        .filter(|l| l.starts_with("packet,audio"))
        .count();
    assert_eq!(video.len(), 250, "{}", tail(&text, 5));
    assert_eq!(audio, 432);
    assert_eq!(video.iter().filter(|l| l.contains(",K")).count(), 5);
    let reordered = video
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f.len() > 3 && f[2] != f[3]
        })
        .count();
    assert_eq!(
        reordered, 190,
        "composition offsets kept (pts != dts on 190 frames)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
