//! Length-delimited frames on the pipes between the agent and its helpers: a varint length, then that many bytes
//! (what prost's `encode_length_delimited` writes). Read exactly, into buffers that are wiped when dropped: a
//! frame carries tokens and keyring records, and a buffered or growing reader would leave copies behind.

use std::io::{self, Read};

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

/// The helper's standard input and output without the standard library's buffers, which would keep copies of
/// the records and tokens that pass through them (and are never wiped): each read and write goes to the pipe.
///
/// # Errors
/// When the descriptors cannot be duplicated.
pub(crate) fn unbuffered_stdio() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::AsFd as _;
    let input = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let output = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
    Ok((input, output))
}

/// No frame between the agent and a helper comes near this: records, tokens and provider documents are KiBs.
pub(crate) const MAX_FRAME: usize = 4 << 20;

/// Reads one frame; `None` when the stream ends before it starts.
///
/// # Errors
/// A stream that ends inside a frame, a length over [`MAX_FRAME`], and the reader's errors.
pub(crate) fn read(from: &mut impl Read) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut length = Length::default();
    loop {
        let mut byte = [0u8];
        if from.read(&mut byte)? == 0 {
            return if length.started() { Err(io::ErrorKind::UnexpectedEof.into()) } else { Ok(None) };
        }
        if let Some(len) = length.push(byte[0])? {
            let mut frame = Zeroizing::new(vec![0; len]);
            from.read_exact(&mut frame)?;
            return Ok(Some(frame));
        }
    }
}

/// [`read`] on an async stream.
///
/// # Errors
/// As [`read`].
pub(crate) async fn read_async(from: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut length = Length::default();
    loop {
        let mut byte = [0u8];
        if from.read(&mut byte).await? == 0 {
            return if length.started() { Err(io::ErrorKind::UnexpectedEof.into()) } else { Ok(None) };
        }
        if let Some(len) = length.push(byte[0])? {
            let mut frame = Zeroizing::new(vec![0; len]);
            from.read_exact(&mut frame).await?;
            return Ok(Some(frame));
        }
    }
}

/// A varint length, read a byte at a time.
#[derive(Default)]
struct Length {
    value: u64,
    shift: u32,
}

impl Length {
    fn started(&self) -> bool {
        self.shift > 0
    }

    /// Adds a byte; the length once it is complete.
    fn push(&mut self, byte: u8) -> io::Result<Option<usize>> {
        if self.shift >= 64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a malformed frame length"));
        }
        self.value |= u64::from(byte & 0x7f) << self.shift;
        self.shift += 7;
        if byte & 0x80 != 0 {
            return Ok(None);
        }
        usize::try_from(self.value)
            .ok()
            .filter(|&n| n <= MAX_FRAME)
            .map(Some)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "an oversized frame"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_end_early_or_are_oversized_are_refused_and_an_empty_stream_is_the_end() {
        assert!(read(&mut &[][..]).unwrap().is_none(), "a closed pipe before a frame: the end");
        assert_eq!(read(&mut &[3u8, 7, 8, 9][..]).unwrap().unwrap().as_slice(), [7, 8, 9]);
        let err = read(&mut &[5u8, 1, 2][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "a frame cut short");
        let err = read(&mut &[0x80u8][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "a length cut short");
        let mut oversized = Vec::new();
        prost::encoding::encode_varint(MAX_FRAME as u64 + 1, &mut oversized);
        let err = read(&mut &oversized[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "no buffer is allocated for a length like that");
        let err = read(&mut &[0xffu8; 11][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "a length that never ends");
    }

    #[tokio::test]
    async fn the_async_reader_reads_the_same_frames() {
        let mut two = &[2u8, 1, 2, 1, 9][..];
        assert_eq!(read_async(&mut two).await.unwrap().unwrap().as_slice(), [1, 2]);
        assert_eq!(read_async(&mut two).await.unwrap().unwrap().as_slice(), [9]);
        assert!(read_async(&mut two).await.unwrap().is_none());
    }
}
