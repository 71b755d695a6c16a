//! Pull inputs: processes a stream's buffer starts to fetch media from elsewhere (RTSP
//! cameras; TS over UDP, HTTP-TS, HLS, HTTP-FLV, RTMP and DTSC from other servers) and
//! publish it into the buffer.

pub mod rtsp_pull;
pub mod stream_pull;
pub mod supervisor;
