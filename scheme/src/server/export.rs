//! Sharing BOs and syncobjs between clients: export tokens and import.
//!
//! Owns: token minting, EXPORT_TOKEN (read on the derived handle itself) and IMPORT (by token,
//! or by naming the derived handle as a second id with `call_multiple_ids` on Redox). The
//! capability is holding the derived handle: a token is valid exactly while that handle is
//! open, and only a holder of the handle can read it. Must not: let a token outlive its handle
//! or resolve across kinds.

use std::hash::{BuildHasher, Hasher, RandomState};

use super::client::BoEntry;
use super::handles::Handle;
use super::GpuScheme;
use crate::driver::{ClientId, GpuDriver};
use crate::errno::SchemeError;
use crate::uapi::flags::ObjectKind;
use crate::uapi::request::{Reply, Token};

type R<T> = Result<T, SchemeError>;

/// The object behind a derived handle, cloned for the importer.
enum Shared<D: GpuDriver> {
    Bo(D::Bo, u64, Option<super::client::ChargeRef>),
    Syncobj(D::Syncobj),
}

impl<D: GpuDriver> GpuScheme<D> {
    /// A 128-bit token nobody can predict: a counter hashed under two SipHash keys drawn from
    /// the OS random source (std's `RandomState`), never repeated within this server.
    pub(super) fn fresh_token(&mut self) -> Token {
        self.token_seq += 1;
        let word = |seq: u64| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(seq);
            h.finish()
        };
        let token = Token([word(self.token_seq), word(!self.token_seq)]);
        if self.exports.contains_key(&token) || token.0 == [0, 0] {
            return self.fresh_token();
        }
        token
    }

    pub(super) fn export_token(&mut self, id: usize) -> R<Reply> {
        match self.handle(id)? {
            Handle::Bo(d) => Ok(Reply::Token(ObjectKind::Bo, d.token)),
            Handle::Syncobj(d) => Ok(Reply::Token(ObjectKind::Syncobj, d.token)),
            other => Err(SchemeError::WrongHandleKind {
                id,
                kind: other.kind_name(),
            }),
        }
    }

    fn shared(&self, id: usize, kind: ObjectKind) -> R<Shared<D>> {
        match (self.handle(id)?, kind) {
            (Handle::Bo(d), ObjectKind::Bo) => Ok(Shared::Bo(d.object.clone(), d.size, d.charge)),
            (Handle::Syncobj(d), ObjectKind::Syncobj) => Ok(Shared::Syncobj(d.object.clone())),
            (other, _) => Err(SchemeError::WrongHandleKind {
                id,
                kind: other.kind_name(),
            }),
        }
    }

    /// IMPORT into `client`: by token, or by the derived handle `second`.
    pub(super) fn import(
        &mut self,
        client: ClientId,
        kind: ObjectKind,
        token: Option<Token>,
        second: Option<usize>,
    ) -> R<Reply> {
        let source = match (token, second) {
            (Some(t), None) => {
                let unknown = SchemeError::UnknownObject {
                    kind: "export token",
                    id: 0,
                };
                let id = *self.exports.get(&t).ok_or(unknown.clone())?;
                // A token of the other kind names nothing importable as `kind`.
                self.shared(id, kind).map_err(|_| unknown)?
            }
            (None, Some(id)) => self.shared(id, kind)?,
            _ => {
                return Err(SchemeError::Invalid(
                    "IMPORT takes a token or a second handle",
                ))
            }
        };
        let limits = self.limits;
        let c = self.client_mut(client)?;
        c.check_object_limit(&limits)?;
        let id = c.fresh_id();
        c.counters.imports += 1;
        match source {
            // An imported BO keeps its creator charged for as long as the importer holds it:
            // memory is always paid for by the client that created it, and never by nobody.
            Shared::Bo(bo, size, charge) => {
                let entry = BoEntry {
                    bo,
                    size,
                    private_to: None,
                    charge,
                };
                c.bos.insert(id, entry);
                self.charge_ref(charge);
            }
            Shared::Syncobj(s) => {
                c.syncobjs.insert(id, s);
            }
        }
        Ok(Reply::NewId(id))
    }
}
