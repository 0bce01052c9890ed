//! The channel between an old and a new pooler process during an online upgrade (see
//! `runtime::upgrade`): a Unix
//! socket pair carrying framed messages (`kind`, length, payload), each with the sockets it
//! hands over attached (SCM_RIGHTS). Blocking; each side runs it on threads of its own.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most sockets one message carries (the listeners: TCP, Unix, Prometheus).
const MAX_FDS: usize = 4;
/// Largest payload accepted (a client's state is a few KB).
const MAX_PAYLOAD: usize = 64 << 20;

/// One message.
pub struct Message {
    pub kind: u8,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Sends `kind` and `payload` with `fds` attached (they stay open here; the receiver gets
/// copies).
pub fn send(sock: &UnixStream, kind: u8, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(
        fds.len() <= MAX_FDS,
        "at most {MAX_FDS} sockets per message"
    );
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    let mut iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    let mut control = [0u8; 128];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes; `control` is 128 bytes, more than
        // the space of MAX_FDS descriptors, and CMSG_FIRSTHDR points into it.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                bytes as usize,
            );
        }
    }
    let total = header.len() + payload.len();
    // SAFETY: `msg` describes live buffers; the socket is open.
    let sent = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest of a short write goes plainly.
    let sent = sent as usize;
    if sent < total {
        let mut rest = header[..].to_vec();
        rest.extend_from_slice(payload);
        io::Write::write_all(&mut &*sock, &rest[sent..])?;
    }
    Ok(())
}

/// Receives the next message; `None` when the other side closed the channel.
pub fn recv(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < header.len() {
        let mut iov = libc::iovec {
            iov_base: header[got..].as_mut_ptr().cast(),
            iov_len: header.len() - got,
        };
        let mut control = [0u8; 128];
        // SAFETY: msghdr is plain data; its pointers refer to live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: as above; MSG_CMSG_CLOEXEC keeps received sockets out of children.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n as usize;
        // SAFETY: the kernel filled `control` up to msg_controllen with well-formed
        // headers; each SCM_RIGHTS payload is an array of descriptors now ours.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("upgrade message of {len} bytes"),
        ));
    }
    let mut payload = vec![0; len];
    (&*sock).read_exact(&mut payload)?;
    Ok(Some(Message {
        kind: header[0],
        payload,
        fds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_sockets() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, mut y) = UnixStream::pair().unwrap();
        send(&a, b'C', b"state", &[x.as_raw_fd()]).unwrap();
        send(&a, b'K', &[1; 50_000], &[]).unwrap_or_else(|e| panic!("{e}"));
        let m = recv(&b).unwrap().unwrap();
        assert_eq!(
            (m.kind, &m.payload[..], m.fds.len()),
            (b'C', &b"state"[..], 1)
        );
        // The received socket is the same connection.
        let mut moved = UnixStream::from(m.fds.into_iter().next().unwrap());
        io::Write::write_all(&mut moved, b"hi").unwrap();
        let mut got = [0u8; 2];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        drop(x);
        let m = recv(&b).unwrap().unwrap();
        assert_eq!((m.kind, m.payload.len(), m.fds.len()), (b'K', 50_000, 0));
        drop(a);
        assert!(recv(&b).unwrap().is_none());
    }
}
