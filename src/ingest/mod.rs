//! The feeds: the live UDP socket ([`socket`], batched receive, the
//! reuseport steering program), the live loop that drives it ([`live`]),
//! and replay of capture files ([`replay`]). Each hands datagrams to
//! [`crate::pipeline::Pipeline::push`] with a [`crate::pipeline::RecvMeta`].

pub mod cmsg;
pub mod live;
pub mod replay;
pub mod socket;
