//! What an upstream sends to a TS-over-UDP, HTTP-TS, HTTP-FLV or DTSC pull (untrusted): the
//! first byte picks the container, the rest is cut into chunks by one length byte each
//! (×8 bytes) and fed to `ContainerDemux`, a second session going on from the first's
//! timeline. Nothing panics and every frame written parses as DTSC.
#![no_main]

use dtsc::container::{Container, ContainerDemux, Timeline};
use libfuzzer_sys::fuzz_target;

fn check(frames: &[u8]) {
    let mut at = 0;
    while at < frames.len() {
        match dtsc::wire::parse_frame(&frames[at..]) {
            Ok(Some((_, used))) => at += used,
            other => panic!("the demuxer wrote a frame that does not parse: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, mut rest)) = data.split_first() else {
        return;
    };
    let container = [Container::Ts, Container::Flv, Container::Dtsc][usize::from(b % 3)];
    let mut timeline = Timeline::after(u64::from(b) * 1000);
    for _ in 0..2 {
        let mut d = ContainerDemux::new(container, timeline.clone());
        let mut frames = Vec::new();
        let mut i = 0;
        while let Some((&len, tail)) = rest.split_first() {
            let n = (usize::from(len) * 8).min(tail.len());
            rest = &tail[n..];
            if d.push(&tail[..n], &mut frames).is_err() {
                break;
            }
            i += 1;
            if i % 4 == 0 {
                break; // the next session takes the rest
            }
        }
        d.finish(&mut frames);
        check(&frames);
        d.commit();
        timeline = d.timeline();
    }
});
