//! URL helpers every protocol shares: percent-decoding (RFC 3986 §2.1) of path elements
//! and stream names (from `dtsc::url`), and a URL with its password hidden for logs.

pub use dtsc::url::{percent_decode, percent_decode_bytes, percent_decode_utf8};

/// A URL with the password of its user part replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((user, host)) => {
            let u = user.split(':').next().unwrap_or("");
            format!("{scheme}://{u}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("rtsp://u:p%40ss@h:554/x"), "rtsp://u:***@h:554/x");
        assert_eq!(redact("rtmp://h/live/k"), "rtmp://h/live/k");
    }
}
