//! The shim's side of the agent protocol: one request, one response, under a hard deadline.
//!
//! A `connect` on a Unix socket waits while the agent's accept backlog is full; Linux bounds that
//! wait by the socket's send timeout, so the socket is made with it set (std's `UnixStream`
//! connects before any option can be set). Reads and writes use socket timeouts recomputed from the
//! one deadline, and the response is bounded by [`proto::MAX_MESSAGE_BYTES`].

use crate::error::Error;
use crate::proto::{self, Request, Response};
use crate::trace::Phases;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `request` to the agent at `socket` and returns its response, all within `timeout`.
///
/// Errors: [`Error::AgentNotRunning`] when the socket file is missing or nobody accepts on it,
/// [`Error::AgentTimeout`] at the deadline, [`Error::AgentIo`] for a broken connection,
/// [`Error::Decode`] for an oversized or malformed answer. A [`Response::Error`] is returned as
/// `Ok`: classifying it is the caller's business.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, Error> {
    call_traced(socket, request, timeout, &mut Phases::off())
}

/// [`call`], marking `connected`, `sent` and `replied` in `phases`.
pub fn call_traced(
    socket: &Path,
    request: &Request,
    timeout: Duration,
    phases: &mut Phases,
) -> Result<Response, Error> {
    let deadline = Instant::now() + timeout;
    let timed_out = || Error::AgentTimeout {
        socket: socket.to_path_buf(),
        timeout_ms: timeout.as_millis() as u64,
    };
    let io_err = |source: io::Error| {
        if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            timed_out()
        } else {
            Error::AgentIo { socket: socket.to_path_buf(), source }
        }
    };

    let mut stream = connect(socket, timeout).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            Error::AgentNotRunning { socket: socket.to_path_buf(), source }
        }
        io::ErrorKind::TimedOut => timed_out(),
        _ => Error::AgentIo { socket: socket.to_path_buf(), source },
    })?;
    phases.mark("connected");

    let mut line = serde_json::to_vec(request).map_err(|e| Error::decode("agent request", e))?;
    line.push(b'\n');
    stream.set_write_timeout(Some(remaining(deadline).ok_or_else(timed_out)?)).map_err(io_err)?;
    stream.write_all(&line).map_err(io_err)?;
    phases.mark("sent");

    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline).ok_or_else(timed_out)?))
            .map_err(io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > proto::MAX_MESSAGE_BYTES {
            return Err(Error::decode(
                "agent response",
                format!("larger than {} bytes", proto::MAX_MESSAGE_BYTES),
            ));
        }
        if chunk[..n].contains(&b'\n') {
            break;
        }
    }
    phases.mark("replied");
    let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    if end == 0 {
        return Err(Error::AgentIo {
            socket: socket.to_path_buf(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "agent closed without answering"),
        });
    }
    serde_json::from_slice(&buf[..end]).map_err(|e| Error::decode("agent response", e))
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SockAddr::unix(socket)?;
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_write_timeout(Some(timeout))?;
    match s.connect(&addr) {
        Ok(()) => Ok(UnixStream::from(std::os::fd::OwnedFd::from(s))),
        // The send timeout ran out waiting for room in the backlog.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Command, PROTOCOL_VERSION};
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    fn req() -> Request {
        Request {
            protocol: PROTOCOL_VERSION,
            command: Command::Del,
            container_id: "c".into(),
            if_name: "eth0".into(),
            netns: String::new(),
            args: Default::default(),
            mtu: None,
            network: "enipool".into(),
            valid_attachments: None,
        }
    }

    fn serve(reply: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = io::BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let got: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(got.container_id, "c");
            let mut s = r.into_inner();
            s.write_all(reply).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        (dir, path)
    }

    #[test]
    fn roundtrip() {
        let (_d, path) = serve(b"{\"outcome\":\"done\",\"released\":0}\n");
        let resp = call(&path, &req(), Duration::from_secs(2)).unwrap();
        assert_eq!(resp, Response::Done { released: 0 });
    }

    fn connect_nonblocking(path: &Path) -> io::Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        s.connect(&socket2::SockAddr::unix(path)?).map(|()| s)
    }

    #[test]
    fn failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let missing =
            call(&dir.path().join("none.sock"), &req(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(missing, Error::AgentNotRunning { .. }), "{missing}");

        // A socket file whose listener is gone: ECONNREFUSED.
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let refused = call(&stale, &req(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(refused, Error::AgentNotRunning { .. }), "{refused}");

        let (_d, silent) = serve(b"");
        let err = call(&silent, &req(), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::AgentTimeout { .. }), "{err}");

        // An agent that accepts nothing: its backlog (0 = one pending connection) fills.
        let full = dir.path().join("full.sock");
        let listener =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        listener.bind(&socket2::SockAddr::unix(&full).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let pending = connect_nonblocking(&full).expect("first connection queues");
        let more = connect_nonblocking(&full).unwrap_err();
        assert_eq!(more.kind(), io::ErrorKind::WouldBlock, "backlog not full: {more}");
        let start = Instant::now();
        let err = call(&full, &req(), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::AgentTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        drop(pending);

        let (_d2, junk) = serve(b"not json\n");
        let err = call(&junk, &req(), Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.code(), crate::error::codes::DECODING_FAILURE, "{err}");
    }
}
