//! The benchmark's process floor (`cargo bench --bench agent` compiles it with rustc): the least a program can do
//! to ask a local agent for a token. It connects to the Unix socket named by its first argument, sends as many
//! bytes as its second argument says, reads as many as its third says, and exits. Standard library only, so that its start-up is a
//! small Rust program's; `pachagent token` run as a process is compared with it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, request, reply] = args.as_slice() else {
        eprintln!("usage: bench-process-floor SOCKET REQUEST_BYTES REPLY_BYTES");
        return ExitCode::from(2);
    };
    let (Ok(request), Ok(reply)) = (request.parse::<usize>(), reply.parse::<usize>()) else {
        eprintln!("bench-process-floor: sizes are byte counts");
        return ExitCode::from(2);
    };
    let exchange = || -> std::io::Result<()> {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(&vec![7u8; request])?;
        let mut back = vec![0u8; reply];
        stream.read_exact(&mut back)?;
        std::io::stdout().write_all(&back[..1])
    };
    match exchange() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-process-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
