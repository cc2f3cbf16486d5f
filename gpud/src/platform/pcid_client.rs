//! The driver side of the pcid channel: typed requests over any [`ChannelIo`].
//!
//! Owns: framing (one `write` per request; replies are an 8-byte LE length then the body,
//! read until complete), and turning each reply into the one variant the request expects.
//!
//! Must not: trust pcid's bytes. A short read, an oversized frame or an unexpected variant is
//! a typed [`PcidError`], never a panic.

use pcid_config::pci::ConfigAccess;
use pcid_config::protocol::{
    MsiInfo, MsixInfo, PciFeature, PciFeatureInfo, PcidServerResponseError, SetFeatureInfo,
    SubdriverArguments,
};
use pcid_config::wire::{self, DecodeError};
use pcid_config::{PcidClientRequest, PcidClientResponse};
use thiserror::Error;

use super::sys::{ChannelIo, SysError};

/// A failed pcid exchange.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PcidError {
    /// The channel call failed.
    #[error("pcid channel: {0}")]
    Io(#[from] SysError),
    /// pcid wrote fewer bytes than the request (requests are one write).
    #[error("short write to pcid: {written} of {len} bytes")]
    ShortWrite {
        /// Bytes accepted.
        written: usize,
        /// Request length.
        len: usize,
    },
    /// The channel ended inside a reply.
    #[error("pcid closed the channel mid-reply")]
    Eof,
    /// The reply did not decode.
    #[error("bad reply from pcid: {0}")]
    Decode(#[from] DecodeError),
    /// pcid answered with an error.
    #[error("pcid refused {request}: {error:?}")]
    Refused {
        /// Request name.
        request: &'static str,
        /// pcid's error.
        error: PcidServerResponseError,
    },
    /// pcid answered with a variant that does not belong to the request.
    #[error("pcid answered {request} with {got}")]
    Unexpected {
        /// Request name.
        request: &'static str,
        /// Debug rendering of the reply.
        got: String,
    },
}

/// A pcid channel with typed requests.
#[derive(Debug)]
pub struct PcidClient<C> {
    channel: C,
}

impl<C: ChannelIo> PcidClient<C> {
    /// Wraps an open channel.
    pub fn new(channel: C) -> Self {
        Self { channel }
    }
    /// The channel (for mapping BARs through it).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Sends one request and reads its reply.
    pub fn exchange(&mut self, req: &PcidClientRequest) -> Result<PcidClientResponse, PcidError> {
        let bytes = wire::to_bytes(req);
        let written = self.channel.write(&bytes)?;
        if written != bytes.len() {
            return Err(PcidError::ShortWrite {
                written,
                len: bytes.len(),
            });
        }
        let mut prefix = [0u8; 8];
        self.read_exact(&mut prefix)?;
        let mut body = vec![0u8; wire::frame_len(prefix)?];
        self.read_exact(&mut body)?;
        Ok(wire::from_bytes(&body)?)
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), PcidError> {
        while !buf.is_empty() {
            match self.channel.read(buf) {
                Ok(0) => return Err(PcidError::Eof),
                // `read` never reports more than it was given; `min` keeps a faulty channel
                // from making the slice index panic.
                Ok(n) => {
                    let n = n.min(buf.len());
                    buf = &mut buf[n..];
                }
                Err(e) if e.is_interrupted() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn unexpected(request: &'static str, got: PcidClientResponse) -> PcidError {
        match got {
            PcidClientResponse::Error(error) => PcidError::Refused { request, error },
            other => PcidError::Unexpected {
                request,
                got: format!("{other:?}"),
            },
        }
    }

    /// `RequestConfig`: BARs, IRQ line, ids.
    pub fn config(&mut self) -> Result<SubdriverArguments, PcidError> {
        match self.exchange(&PcidClientRequest::RequestConfig)? {
            PcidClientResponse::Config(args) => Ok(args),
            other => Err(Self::unexpected("RequestConfig", other)),
        }
    }

    /// `RequestFeatures`: which of MSI/MSI-X the function has.
    pub fn features(&mut self) -> Result<Vec<PciFeature>, PcidError> {
        match self.exchange(&PcidClientRequest::RequestFeatures)? {
            PcidClientResponse::AllFeatures(f) => Ok(f),
            other => Err(Self::unexpected("RequestFeatures", other)),
        }
    }

    /// `FeatureInfo(MsiX)`.
    pub fn msix_info(&mut self) -> Result<MsixInfo, PcidError> {
        match self.exchange(&PcidClientRequest::FeatureInfo(PciFeature::MsiX))? {
            PcidClientResponse::FeatureInfo(PciFeature::MsiX, PciFeatureInfo::MsiX(i)) => Ok(i),
            other => Err(Self::unexpected("FeatureInfo(MsiX)", other)),
        }
    }

    /// `FeatureInfo(Msi)`.
    pub fn msi_info(&mut self) -> Result<MsiInfo, PcidError> {
        match self.exchange(&PcidClientRequest::FeatureInfo(PciFeature::Msi))? {
            PcidClientResponse::FeatureInfo(PciFeature::Msi, PciFeatureInfo::Msi(i)) => Ok(i),
            other => Err(Self::unexpected("FeatureInfo(Msi)", other)),
        }
    }

    /// `EnableFeature(f)`.
    pub fn enable_feature(&mut self, f: PciFeature) -> Result<(), PcidError> {
        match self.exchange(&PcidClientRequest::EnableFeature(f))? {
            PcidClientResponse::FeatureEnabled(g) if g == f => Ok(()),
            other => Err(Self::unexpected("EnableFeature", other)),
        }
    }

    /// `SetFeatureInfo(info)`.
    pub fn set_feature_info(&mut self, info: SetFeatureInfo) -> Result<(), PcidError> {
        let want = match info {
            SetFeatureInfo::Msi(_) => PciFeature::Msi,
            SetFeatureInfo::MsiX { .. } => PciFeature::MsiX,
        };
        match self.exchange(&PcidClientRequest::SetFeatureInfo(info))? {
            PcidClientResponse::SetFeatureInfo(g) if g == want => Ok(()),
            other => Err(Self::unexpected("SetFeatureInfo", other)),
        }
    }

    /// `ReadConfig(offset)`: one config-space dword.
    pub fn read_config(&mut self, offset: u16) -> Result<u32, PcidError> {
        match self.exchange(&PcidClientRequest::ReadConfig(offset))? {
            PcidClientResponse::ReadConfig(v) => Ok(v),
            other => Err(Self::unexpected("ReadConfig", other)),
        }
    }

    /// `WriteConfig(offset, value)`.
    pub fn write_config(&mut self, offset: u16, value: u32) -> Result<(), PcidError> {
        match self.exchange(&PcidClientRequest::WriteConfig(offset, value))? {
            PcidClientResponse::WriteConfig => Ok(()),
            other => Err(Self::unexpected("WriteConfig", other)),
        }
    }
}

/// Live config space through pcid, e.g. for `pcid_config::pci::probe_bars`.
impl<C: ChannelIo> ConfigAccess for PcidClient<C> {
    type Error = PcidError;
    fn read32(&mut self, offset: u16) -> Result<u32, PcidError> {
        self.read_config(offset)
    }
    fn write32(&mut self, offset: u16, value: u32) -> Result<(), PcidError> {
        self.write_config(offset, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A channel replaying fixed reply bytes and recording what was written.
    struct Scripted {
        reply: VecDeque<u8>,
        written: Vec<Vec<u8>>,
        accept: Option<usize>,
    }

    impl ChannelIo for Scripted {
        fn write(&mut self, buf: &[u8]) -> Result<usize, SysError> {
            self.written.push(buf.to_vec());
            Ok(self.accept.unwrap_or(buf.len()))
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, SysError> {
            let n = buf.len().min(self.reply.len()).min(3);
            for b in buf.iter_mut().take(n) {
                *b = self.reply.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }

    fn client(reply: Vec<u8>) -> PcidClient<Scripted> {
        PcidClient::new(Scripted {
            reply: reply.into(),
            written: vec![],
            accept: None,
        })
    }

    #[test]
    fn request_is_one_write_and_reply_is_reassembled() {
        let mut c = client(wire::to_frame(&PcidClientResponse::AllFeatures(vec![
            PciFeature::MsiX,
        ])));
        assert_eq!(c.features(), Ok(vec![PciFeature::MsiX]));
        assert_eq!(c.channel.written, vec![vec![2, 0, 0, 0]]);
    }

    #[test]
    fn broken_replies_are_typed_errors() {
        let mut frame = wire::to_frame(&PcidClientResponse::ReadConfig(1));
        frame.truncate(frame.len() - 1);
        assert_eq!(client(frame).features(), Err(PcidError::Eof));
        let huge = (1u64 << 40).to_le_bytes().to_vec();
        assert_eq!(
            client(huge).config(),
            Err(PcidError::Decode(DecodeError::FrameTooLong(1 << 40)))
        );
        let wrong = wire::to_frame(&PcidClientResponse::WriteConfig);
        assert!(matches!(
            client(wrong).config(),
            Err(PcidError::Unexpected {
                request: "RequestConfig",
                ..
            })
        ));
        let other = wire::to_frame(&PcidClientResponse::FeatureEnabled(PciFeature::Msi));
        assert!(matches!(
            client(other).enable_feature(PciFeature::MsiX),
            Err(PcidError::Unexpected { .. })
        ));
        let read = wire::to_frame(&PcidClientResponse::ReadConfig(0x0001_7347));
        let mut c = client(read);
        assert_eq!(ConfigAccess::read32(&mut c, 0), Ok(0x0001_7347));
        assert_eq!(c.channel.written, vec![vec![7, 0, 0, 0, 0, 0]]);
        let mut short = client(vec![]);
        short.channel.accept = Some(1);
        assert_eq!(
            short.config(),
            Err(PcidError::ShortWrite { written: 1, len: 4 })
        );
    }
}
