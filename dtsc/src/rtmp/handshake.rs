//! The simple RTMP handshake (Adobe RTMP spec 1.0 (Dec 2012) §5.2), both sides, sans-IO.
//!
//! Wire shapes (§5.2.2–§5.2.4): C0/S0 is one version byte (3); C1/S1 are 1536 bytes: time
//! (u32 BE, ms), four zero bytes, 1528 random bytes; C2/S2 are 1536 bytes echoing the peer's
//! C1/S1 (time, time2, random echo).
//!
//! The server's S1 carries four zero bytes at offset 4 (the "version" field); ffmpeg and
//! librtmp then skip the digest (Flash "complex" handshake) validation and accept the simple
//! handshake. No randomness source is used inside: the caller passes a seed and the random
//! block comes from an xorshift64* generator.

use thiserror::Error;

/// Length in bytes of C1, S1, C2 and S2 (§5.2.3).
pub const HANDSHAKE_SIZE: usize = 1536;

/// The only protocol version accepted in C0 / S0 (§5.2.2): plain RTMP.
pub const RTMP_VERSION: u8 = 3;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// C0 / S0 asked for encrypted RTMPE (version 6, or 8 for the XTEA variant).
    #[error(
        "RTMP handshake: version {0} is encrypted RTMPE, which is not supported (only version 3)"
    )]
    Encrypted(u8),
    /// C0 / S0 carried another version byte (often: not an RTMP client at all).
    #[error("RTMP handshake: version {0} is not supported (only version 3)")]
    BadVersion(u8),
}

/// How far [`Handshake::push`] / [`ClientHandshake::push`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeProgress {
    /// Bytes of the input taken (buffered or used). Never more than the handshake needs: with
    /// `done`, `input[consumed..]` is the first chunk-stream data.
    pub consumed: usize,
    /// True once the handshake is complete.
    pub done: bool,
}

/// A tiny xorshift64* generator: enough to fill the handshake's random block from a seed.
fn fill_random(seed: u64, out: &mut [u8]) {
    let mut x = if seed == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        seed
    };
    for chunk in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes a C1/S1 block: time `time_ms`, four zero bytes, 1528 bytes from `seed`.
fn write_c1s1(time_ms: u32, seed: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.resize(start + HANDSHAKE_SIZE, 0);
    fill_random(seed, &mut out[start + 8..]);
}

fn check_version(v: u8) -> Result<(), HandshakeError> {
    match v {
        RTMP_VERSION => Ok(()),
        6 | 8 => Err(HandshakeError::Encrypted(v)),
        _ => Err(HandshakeError::BadVersion(v)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Collecting C0 + C1 (1537 bytes).
    C0C1,
    /// S0S1S2 sent; collecting C2 (1536 bytes).
    C2,
    Done,
}

/// Server side of the simple handshake: reads C0+C1, writes S0+S1+S2, reads C2.
#[derive(Debug)]
pub struct Handshake {
    state: ServerState,
    seed: u64,
    /// C0+C1 collected so far (up to 1537 bytes).
    buf: Vec<u8>,
    /// C2 bytes seen so far (its content is not checked: many clients send junk there).
    c2_seen: usize,
}

impl Handshake {
    /// A server handshake whose S1 random block comes from `seed`.
    pub fn new(seed: u64) -> Handshake {
        Handshake {
            state: ServerState::C0C1,
            seed,
            buf: Vec::with_capacity(1 + HANDSHAKE_SIZE),
            c2_seen: 0,
        }
    }

    /// True once C2 has been read.
    pub fn is_done(&self) -> bool {
        self.state == ServerState::Done
    }

    /// Feeds received bytes. Appends S0+S1+S2 (3073 bytes) to `out` once C0+C1 are in;
    /// C2's content is ignored. Fails on a C0 version other than 3, as soon as C0 arrives.
    pub fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<HandshakeProgress, HandshakeError> {
        let mut used = 0;
        if self.state == ServerState::C0C1 {
            let want = 1 + HANDSHAKE_SIZE - self.buf.len();
            let n = want.min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            used += n;
            if let Some(&v) = self.buf.first() {
                check_version(v)?;
            }
            if self.buf.len() == 1 + HANDSHAKE_SIZE {
                out.push(RTMP_VERSION);
                write_c1s1(0, self.seed, out);
                // S2 echoes C1 (§5.2.4).
                out.extend_from_slice(&self.buf[1..]);
                self.buf = Vec::new();
                self.state = ServerState::C2;
            }
        }
        if self.state == ServerState::C2 {
            let n = (HANDSHAKE_SIZE - self.c2_seen).min(input.len() - used);
            self.c2_seen += n;
            used += n;
            if self.c2_seen == HANDSHAKE_SIZE {
                self.state = ServerState::Done;
            }
        }
        Ok(HandshakeProgress {
            consumed: used,
            done: self.state == ServerState::Done,
        })
    }
}

/// Client side of the simple handshake: writes C0+C1, reads S0+S1+S2, writes C2 (echo of S1).
/// Used for outgoing pushes and by tests.
#[derive(Debug)]
pub struct ClientHandshake {
    started: bool,
    done: bool,
    seed: u64,
    /// S0+S1 collected so far.
    buf: Vec<u8>,
    /// S2 bytes seen (not checked).
    s2_seen: usize,
}

impl ClientHandshake {
    /// A client handshake whose C1 random block comes from `seed`.
    pub fn new(seed: u64) -> ClientHandshake {
        ClientHandshake {
            started: false,
            done: false,
            seed,
            buf: Vec::with_capacity(1 + HANDSHAKE_SIZE),
            s2_seen: 0,
        }
    }

    /// Appends C0+C1 (1537 bytes, C1 time `time_ms`) to `out`. Call once, first.
    pub fn start(&mut self, time_ms: u32, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            out.push(RTMP_VERSION);
            write_c1s1(time_ms, self.seed, out);
        }
    }

    /// True once S2 has been read (C2 has then been written).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds received bytes; appends C2 to `out` once S0+S1 are in. Fails when S0 is not 3.
    pub fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<HandshakeProgress, HandshakeError> {
        let mut used = 0;
        if self.buf.len() < 1 + HANDSHAKE_SIZE {
            let n = (1 + HANDSHAKE_SIZE - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            used += n;
            if let Some(&v) = self.buf.first() {
                check_version(v)?;
            }
            if self.buf.len() == 1 + HANDSHAKE_SIZE {
                out.extend_from_slice(&self.buf[1..]);
            }
        }
        if self.buf.len() == 1 + HANDSHAKE_SIZE && !self.done {
            let n = (HANDSHAKE_SIZE - self.s2_seen).min(input.len() - used);
            self.s2_seen += n;
            used += n;
            self.done = self.s2_seen == HANDSHAKE_SIZE;
        }
        Ok(HandshakeProgress {
            consumed: used,
            done: self.done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(split: usize) {
        let mut c = ClientHandshake::new(7);
        let mut s = Handshake::new(42);
        let mut c2s = Vec::new();
        c.start(1000, &mut c2s);
        assert_eq!(c2s.len(), 1537);
        let c1 = c2s[1..].to_vec();
        let mut s2c = Vec::new();
        let mut fed = 0;
        while fed < c2s.len() {
            let end = (fed + split).min(c2s.len());
            let p = s.push(&c2s[fed..end], &mut s2c).unwrap();
            assert_eq!(p.consumed, end - fed);
            fed = end;
        }
        assert_eq!(s2c.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(s2c[0], 3);
        assert_eq!(&s2c[1..9], &[0; 8], "S1 time 0 and zero version");
        assert_eq!(&s2c[1 + HANDSHAKE_SIZE..], &c1[..], "S2 echoes C1");
        let s1 = s2c[1..1 + HANDSHAKE_SIZE].to_vec();
        let mut c2 = Vec::new();
        // Server bytes followed by extra data: the client must stop at the end of S2.
        s2c.extend_from_slice(b"extra");
        let p = c.push(&s2c, &mut c2).unwrap();
        assert_eq!(
            p,
            HandshakeProgress {
                consumed: 1 + 2 * HANDSHAKE_SIZE,
                done: true
            }
        );
        assert_eq!(c2, s1, "C2 echoes S1");
        c2.extend_from_slice(b"chunks");
        let p = s.push(&c2, &mut Vec::new()).unwrap();
        assert_eq!(
            p,
            HandshakeProgress {
                consumed: HANDSHAKE_SIZE,
                done: true
            }
        );
        assert!(s.is_done() && c.is_done());
    }

    #[test]
    fn full_handshake_in_one_piece_and_byte_by_byte() {
        run(usize::MAX);
        run(1);
        run(700);
    }

    #[test]
    fn rejects_other_versions() {
        let mut s = Handshake::new(1);
        let e = s.push(&[6], &mut Vec::new()).unwrap_err();
        assert_eq!(e, HandshakeError::Encrypted(6));
        assert!(e.to_string().contains("RTMPE"));
        let e = Handshake::new(1)
            .push(b"GET / HTTP/1.1", &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "RTMP handshake: version 71 is not supported (only version 3)"
        );
        assert!(ClientHandshake::new(1).push(&[0], &mut Vec::new()).is_err());
    }

    #[test]
    fn seeds_change_random_block() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_c1s1(0, 1, &mut a);
        write_c1s1(0, 2, &mut b);
        assert_ne!(a, b);
        assert_eq!(a.len(), HANDSHAKE_SIZE);
    }
}
