//! What Sluice's processes say to each other, written once for both ends:
//!
//! * [`messages`]: the typed requests and replies on the controller's socket
//!   (`RUNDIR/controller.sock`: open a stream, report an event) and on a buffer's socket
//!   (attach, unpublish), each with its one encoding as a DTSC `DTCM` command object;
//! * [`socket`]: sending and receiving one such command over a Unix socket, file descriptors
//!   included (SCM_RIGHTS);
//! * [`sessions`]: the shared session table every connection, publisher, pull and push
//!   process writes its own slot of, and the controller reads for its statistics;
//! * [`process`]: naming a process and turning SIGTERM into a flag its loop checks.

pub mod messages;
pub mod process;
pub mod sessions;
pub mod socket;
