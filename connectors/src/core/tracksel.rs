//! Track selection on play URLs, in MistServer's form: `?video=…&audio=…` on a progressive
//! HTTP URL (`/S.flv?audio=swe`) or an RTMP play name (`S?video=2&audio=none`). Each value
//! is a comma-separated list of terms, any of which selects a track of that kind:
//! * a track id (`2`);
//! * a codec name as DTSC spells it, any case (`h264`, `AAC`);
//! * a language code (`swe`);
//! * `all` or `*`: every track of the kind; `none` or `-1`: none.
//!
//! A kind without a selector keeps all its tracks, and the output then takes what its format
//! carries (FLV and RTMP: the first video and the first audio track). A selector that
//! matches nothing leaves that kind empty: the viewer asked for something that is not there.

use dtsc::{Track, TrackKind};

/// The selectors of one play request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    video: Option<String>,
    audio: Option<String>,
}

impl Selection {
    /// Reads `video=` and `audio=` from a query string (`a=b&c=d`, percent-decoded values);
    /// other keys are ignored.
    pub fn from_query(query: &str) -> Selection {
        let mut sel = Selection::default();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("video", v)) => sel.video = Some(crate::core::url::percent_decode(v)),
                Some(("audio", v)) => sel.audio = Some(crate::core::url::percent_decode(v)),
                _ => {}
            }
        }
        sel
    }

    /// True when nothing is selected explicitly (every track is kept).
    pub fn is_default(&self) -> bool {
        self.video.is_none() && self.audio.is_none()
    }

    /// The tracks of `tracks` this selection keeps, in stream order. Meta tracks are kept.
    pub fn apply(&self, tracks: &[Track]) -> Vec<Track> {
        tracks
            .iter()
            .filter(|t| {
                let sel = match t.kind {
                    TrackKind::Video => &self.video,
                    TrackKind::Audio => &self.audio,
                    TrackKind::Meta => return true,
                };
                sel.as_deref()
                    .is_none_or(|s| s.split(',').any(|term| matches(term.trim(), t)))
            })
            .cloned()
            .collect()
    }
}

/// What FLV and RTMP carry of `tracks`: the first H.264 video and the first AAC or MP3 audio
/// track ([`dtsc::flv::flv_tracks`]). A narrowing for [`crate::core::cursor::Cursor::narrow_to`].
pub fn flv_carried(tracks: &[Track]) -> Vec<Track> {
    let (video, audio) = dtsc::flv::flv_tracks(tracks);
    video.into_iter().chain(audio).cloned().collect()
}

fn matches(term: &str, t: &Track) -> bool {
    match term {
        "all" | "*" => true,
        "none" | "-1" | "" => false,
        _ => {
            if let Ok(id) = term.parse::<u32>() {
                return t.id == id;
            }
            t.codec.as_str().eq_ignore_ascii_case(term)
                || t.lang
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(term))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::Codec;
    use proptest::prelude::*;

    fn tracks() -> Vec<Track> {
        let mut out = vec![
            Track::new(1, TrackKind::Video, Codec::H264),
            Track::new(2, TrackKind::Video, Codec::Hevc),
            Track::new(3, TrackKind::Audio, Codec::Aac),
            Track::new(4, TrackKind::Audio, Codec::Aac),
            Track::new(5, TrackKind::Meta, Codec::Other("JSON".into())),
        ];
        out[2].lang = Some("eng".into());
        out[3].lang = Some("swe".into());
        out
    }

    fn ids(q: &str) -> Vec<u32> {
        Selection::from_query(q)
            .apply(&tracks())
            .iter()
            .map(|t| t.id)
            .collect()
    }

    #[test]
    fn selects_by_id_codec_language_all_and_none() {
        assert_eq!(ids(""), [1, 2, 3, 4, 5]);
        assert!(Selection::from_query("x=1").is_default());
        assert_eq!(ids("video=2&audio=swe"), [2, 4, 5]);
        assert_eq!(ids("video=hevc"), [2, 3, 4, 5]);
        assert_eq!(ids("audio=none"), [1, 2, 5]);
        assert_eq!(ids("video=-1&audio=all"), [3, 4, 5]);
        assert_eq!(ids("audio=ENG,4"), [1, 2, 3, 4, 5]);
        assert_eq!(ids("video=9"), [3, 4, 5]);
        assert_eq!(ids("audio=s%77e"), [1, 2, 4, 5]);
        let flv: Vec<u32> = flv_carried(&tracks()).iter().map(|t| t.id).collect();
        assert_eq!(flv, [1, 3]);
    }

    proptest! {
        #[test]
        fn keeps_a_subset_in_order(q in "\\PC{0,40}") {
            let got = Selection::from_query(&q).apply(&tracks());
            let all = tracks();
            let mut at = 0;
            for t in &got {
                let i = all[at..].iter().position(|x| x == t);
                prop_assert!(i.is_some());
                at += i.unwrap() + 1;
            }
        }
    }
}
