//! WebSocket sessions (upgrade, control messages, echo).

use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::conn::{respond_error, Request};
use super::worker::Worker;

pub async fn serve(w: Rc<Worker>, stream: TcpStream, _req: Request, _buf: Vec<u8>) {
    let fd = stream.as_raw_fd();
    respond_error(&w, &stream, fd, 501, "WebSocket is not built yet").await;
}
