//! Monotonic counters ([`MonotonicCounter`]) in TPM NV indices of type
//! `TPM_NT_COUNTER`, for [`TpmBackend`] and, with the same functions, for a
//! soft store sealed by [`TpmSealedKek`](crate::TpmSealedKek).
//!
//! - **Index**: drawn from the TPM's RNG in the owner range
//!   `0x01000000..=0x013FFFFF`; an index already defined (by anyone) is
//!   skipped and another drawn, at most [`DRAWS`] times.
//! - **Definition**: 8 bytes, name algorithm SHA-256, empty auth value, no
//!   policy, attributes `TPM_NT_COUNTER | OWNERWRITE | OWNERREAD | AUTHREAD
//!   | NO_DA`. Only the owner hierarchy can raise or delete the counter, so
//!   nobody without the owner auth can raise it to fake a rollback alarm.
//!   Anyone can read it with the empty index auth (`AUTHREAD`): the value is
//!   not secret, and reads need not send the owner auth over the bus.
//!   `NO_DA`: the index auth is empty, so a failed index authorisation is
//!   no guess and must not count towards the TPM's dictionary-attack
//!   lockout.
//! - **First value**: a counter cannot be read before its first
//!   `TPM2_NV_Increment`, which starts it from the highest value any counter
//!   of this TPM ever had (not from zero); `counter_create` increments once.
//! - **Reference**: the index, 4 bytes big-endian. One that is not 4 bytes
//!   in the owner range is `InvalidInput`. An index the TPM does not hold,
//!   or that is not a written counter with exactly the attributes above
//!   (another program's index), is `NotFound` for read and increment and
//!   nothing to do for destroy: another program's index is never deleted.
//! - **Owner auth**: define, increment and undefine are authorised by the
//!   owner hierarchy auth of the [`TpmConfig`](crate::TpmConfig) (a password
//!   session: in clear on the bus, as at every open), set on the connection
//!   for that command only.
//! - **Retries**: [`TpmBackend`] re-opens a lost connection once and
//!   repeats the call, but only from a step that changed nothing:
//!   a failed `TPM2_NV_DefineSpace` or `TPM2_NV_Increment`, or a read after
//!   one, is reported, never repeated, so one call raises a counter at most
//!   once and defines at most one index.

use crate::esys::nv::{NV_NO_DA, NV_OWNERWRITE, NV_STATE_BITS, NV_TYPE_COUNTER, NV_WRITTEN};
use crate::esys::{Esys, Tr, NV_AUTHREAD, NV_OWNERREAD, RH_OWNER};
use crate::rc::{self, TpmRc};
use crate::TpmBackend;
use keystore_backend::{Component, CounterRef, Error, MonotonicCounter, Result};
use tss_esapi::constants::tss as c;

/// The first index of the owner range.
pub(crate) const FIRST_INDEX: u32 = 0x0100_0000;
/// The last index of the owner range.
pub(crate) const LAST_INDEX: u32 = 0x013F_FFFF;
/// How many random indices `create` tries.
pub(crate) const DRAWS: usize = 16;
const ATTRIBUTES: u32 = NV_TYPE_COUNTER | NV_OWNERWRITE | NV_OWNERREAD | NV_AUTHREAD | NV_NO_DA;
const SIZE: u16 = 8;

/// A failed step: the TPM code (a local code when the step must not be
/// repeated on a new connection) and the error to report.
pub(crate) type Fail = (TpmRc, Error);

fn fail(what: &str) -> impl Fn(TpmRc) -> Fail + '_ {
    move |rc| (rc, rc::to_error(what, rc))
}

/// As [`fail`], never repeated: the step may have changed the TPM.
fn fail_final(what: &str) -> impl Fn(TpmRc) -> Fail + '_ {
    move |rc| {
        let e = if rc.is_transport() {
            Error::backend(
                Component::Tpm,
                format!(
                    "the TPM connection broke while trying to {what}; it may have taken effect"
                ),
                rc,
            )
        } else {
            rc::to_error(what, rc)
        };
        (TpmRc::LOCAL_BAD_VALUE, e)
    }
}

fn final_error(e: Error) -> Fail {
    (TpmRc::LOCAL_BAD_VALUE, e)
}

/// The NV index `reference` names: 4 bytes big-endian in the owner range,
/// else `InvalidInput`.
pub(crate) fn index_of(reference: &[u8]) -> Result<u32> {
    let bytes: [u8; 4] = reference.try_into().map_err(|_| {
        Error::invalid_input(format!(
            "a TPM counter reference is a 4-byte NV index, got {} bytes",
            reference.len()
        ))
    })?;
    let index = u32::from_be_bytes(bytes);
    if !(FIRST_INDEX..=LAST_INDEX).contains(&index) {
        return Err(Error::invalid_input(format!(
            "NV index 0x{index:08x} is outside the owner range \
             0x{FIRST_INDEX:08x}..=0x{LAST_INDEX:08x}"
        )));
    }
    Ok(index)
}

/// `TPM NV index 0x01xxxxxx`, or the bytes of a malformed reference.
pub(crate) fn describe(reference: &[u8]) -> String {
    match index_of(reference) {
        Ok(index) => format!("TPM NV index 0x{index:08x}"),
        Err(_) => format!(
            "TPM NV index (malformed reference {})",
            hex::encode(reference)
        ),
    }
}

fn not_found(index: u32) -> Fail {
    final_error(Error::not_found(format!(
        "the TPM holds no keystore counter at NV index 0x{index:08x} \
         (never defined here, destroyed, or the TPM was cleared)"
    )))
}

/// Runs `f` with the owner auth set on `esys`, and clears it again.
fn with_owner<T>(
    esys: &mut Esys,
    owner: &[u8],
    f: impl FnOnce(&mut Esys) -> std::result::Result<T, TpmRc>,
) -> std::result::Result<T, TpmRc> {
    esys.set_auth(RH_OWNER, owner)?;
    let out = f(esys);
    let _ = esys.set_auth(RH_OWNER, &[]);
    out
}

/// The ESYS handle of the keystore counter at `index` (release it with
/// [`Esys::tr_close`]) and whether it was written; `None` when the TPM
/// holds no such index or another kind of index there.
fn lookup(esys: &mut Esys, index: u32) -> std::result::Result<Option<(Tr, bool)>, Fail> {
    let what = format!("read the public area of NV index 0x{index:08x}");
    match esys.nv_info(index).map_err(fail(&what))? {
        None => Ok(None),
        Some((tr, info)) if info.attributes & !NV_STATE_BITS == ATTRIBUTES && info.size == SIZE => {
            Ok(Some((tr, info.attributes & NV_WRITTEN != 0)))
        }
        Some((tr, _)) => {
            esys.tr_close(tr);
            Ok(None)
        }
    }
}

/// `TPM2_NV_Read` of the 8-byte counter `tr` with its (empty) index auth.
fn read_value(esys: &mut Esys, tr: Tr) -> std::result::Result<u64, TpmRc> {
    esys.set_auth(tr, &[])?;
    let data = esys.nv_read(tr, tr, SIZE, SIZE)?;
    let bytes: [u8; 8] = data
        .as_slice()
        .try_into()
        .map_err(|_| TpmRc::LOCAL_BAD_VALUE)?;
    Ok(u64::from_be_bytes(bytes))
}

/// Defines a counter at a free random owner index with owner auth
/// `owner`, increments it once, and returns it with its first value. If the
/// increment fails the index is undefined again (best effort).
pub(crate) fn create(
    esys: &mut Esys,
    owner: &[u8],
) -> std::result::Result<(CounterRef, u64), Fail> {
    for _ in 0..DRAWS {
        let rnd = esys
            .get_random(4)
            .map_err(fail("draw an NV index from the TPM's RNG"))?;
        let rnd: [u8; 4] = rnd
            .as_slice()
            .try_into()
            .map_err(|_| fail("draw an NV index from the TPM's RNG")(TpmRc::LOCAL_BAD_VALUE))?;
        let index = FIRST_INDEX + u32::from_be_bytes(rnd) % (LAST_INDEX - FIRST_INDEX + 1);
        // Asked first (TPM2_GetCapability) so that a taken index costs no
        // failed command; a race with another definer is TPM_RC_NV_DEFINED.
        let taken = esys
            .handles(index)
            .map_err(fail("list the TPM's NV indices"))?;
        if taken.contains(&index) {
            continue;
        }
        let defined = with_owner(esys, owner, |e| {
            e.nv_define_space(RH_OWNER, index, ATTRIBUTES, SIZE)
        });
        let tr = match defined {
            Ok(tr) => tr,
            Err(rc) if rc.is(c::TPM2_RC_NV_DEFINED) => continue,
            Err(rc) if rc.is(c::TPM2_RC_NV_SPACE) => {
                return Err(final_error(Error::backend(
                    Component::Tpm,
                    "the TPM has no room for another NV counter index (TPM_RC_NV_SPACE)",
                    rc,
                )))
            }
            Err(rc) => return Err(fail_final("define a counter NV index")(rc)),
        };
        let value = with_owner(esys, owner, |e| e.nv_increment(RH_OWNER, tr))
            .and_then(|()| read_value(esys, tr));
        return match value {
            Ok(v) => {
                esys.tr_close(tr);
                let reference = index.to_be_bytes().to_vec();
                let description = describe(&reference);
                Ok((CounterRef::new(reference, description), v))
            }
            Err(rc) => {
                // Not left behind uninitialised; on success ESYS released `tr`.
                if with_owner(esys, owner, |e| e.nv_undefine_space(RH_OWNER, tr)).is_err() {
                    esys.tr_close(tr);
                }
                Err(fail_final(&format!(
                    "initialise the counter at NV index 0x{index:08x}"
                ))(rc))
            }
        };
    }
    Err(final_error(Error::backend_msg(
        Component::Tpm,
        format!("no free NV index in the owner range after {DRAWS} random draws"),
    )))
}

/// The value of the counter at `index`.
pub(crate) fn read(esys: &mut Esys, index: u32) -> std::result::Result<u64, Fail> {
    let Some((tr, written)) = lookup(esys, index)? else {
        return Err(not_found(index));
    };
    let out = if written {
        read_value(esys, tr).map_err(fail(&format!("read the counter at NV index 0x{index:08x}")))
    } else {
        Err(not_found(index))
    };
    esys.tr_close(tr);
    out
}

/// Raises the counter at `index` by one (owner auth `owner`) and returns
/// the new value.
pub(crate) fn increment(
    esys: &mut Esys,
    owner: &[u8],
    index: u32,
) -> std::result::Result<u64, Fail> {
    let Some((tr, written)) = lookup(esys, index)? else {
        return Err(not_found(index));
    };
    let out = if written {
        with_owner(esys, owner, |e| e.nv_increment(RH_OWNER, tr))
            .and_then(|()| read_value(esys, tr))
            .map_err(fail_final(&format!(
                "increment the counter at NV index 0x{index:08x}"
            )))
    } else {
        Err(not_found(index))
    };
    esys.tr_close(tr);
    out
}

/// Undefines the counter at `index` (owner auth `owner`); nothing to do
/// when the TPM holds no keystore counter there.
pub(crate) fn destroy(esys: &mut Esys, owner: &[u8], index: u32) -> std::result::Result<(), Fail> {
    let Some((tr, _)) = lookup(esys, index)? else {
        return Ok(());
    };
    // On success ESYS released `tr`.
    with_owner(esys, owner, |e| e.nv_undefine_space(RH_OWNER, tr)).map_err(|rc| {
        esys.tr_close(tr);
        fail(&format!("undefine the counter at NV index 0x{index:08x}"))(rc)
    })
}

/// Counters in TPM NV indices (see the module documentation): `Backend`
/// when the TPM fails, `Auth` when it refuses the owner auth.
impl MonotonicCounter for TpmBackend {
    /// `TPM2_NV_DefineSpace` at a random free owner index, then one
    /// `TPM2_NV_Increment`; returns the counter and its first value (the
    /// TPM's highest counter value so far plus one, not zero).
    fn counter_create(&self) -> Result<(CounterRef, u64)> {
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            create(&mut conn.esys, self.config.owner_auth())
        })
    }

    /// `TPM2_NV_Read` of the 8-byte big-endian value.
    fn counter_read(&self, counter: &[u8]) -> Result<u64> {
        let index = index_of(counter)?;
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| read(&mut conn.esys, index))
    }

    /// `TPM2_NV_Increment`, then `TPM2_NV_Read`.
    fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
        let index = index_of(counter)?;
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            increment(&mut conn.esys, self.config.owner_auth(), index)
        })
    }

    /// `TPM2_NV_UndefineSpace`; an absent counter is `Ok`.
    fn counter_destroy(&self, counter: &[u8]) -> Result<()> {
        let index = index_of(counter)?;
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            destroy(&mut conn.esys, self.config.owner_auth(), index)
        })
    }

    /// `TPM NV index 0x01xxxxxx`.
    fn counter_describe(&self, counter: &[u8]) -> String {
        describe(counter)
    }
}
