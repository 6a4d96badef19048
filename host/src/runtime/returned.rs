//! What the `handle` export returns, measured before it is copied out of the guest.
//!
//! A handler returns `result<list<u8>, job-error>`: bytes, or a message in `retry` / `fail`.
//! Lifted as `Vec<u8>` and `String` (what `bindgen!` generates), every byte is copied into
//! the host before anyone can look at its size: a hostile handler returning its whole memory
//! (up to its memory cap, gigabytes) made the host hold a second copy of it, and, in a debug
//! build, held a guest thread for seconds copying it, only for the copy to be refused as
//! `result_too_large`. A view (`WasmList`) cannot be kept to measure later: wasmtime 48 runs
//! the guest's post-return, which frees the result, before the export call returns.
//!
//! So the call is made with the types of this module, which wasmtime lifts exactly as it lifts
//! `Vec<u8>` and `String` (the same checks of pointer, length and encoding, the same errors),
//! except that a value over [`MAX_RETURNED_BYTES`] is not copied: only its length is kept
//! ([`Bytes::TooLarge`], [`Text::TooLarge`]). Their type check against the component's
//! `handle` is made once per handler, when it is loaded ([`check`]).
//!
//! These implement wasmtime's `ComponentType` and `Lift` by hand, which its documentation
//! marks as internal (the derive macros' interface, `wasmtime::component::__internal`): each
//! delegates every decision to wasmtime's own implementation for the same WIT type, and adds
//! only the length check in between. Pinned with wasmtime 48. With [`handle`], the only
//! `unsafe` in wasmq besides `cache::deserialize` (the workspace denies it elsewhere), each
//! with its SAFETY argument.

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, wasmtime_environ,
};
use wasmtime::component::{ComponentType, Lift, TypedFunc, WasmList, WasmStr};

use super::bindings;
use super::outcome::MAX_RETURNED_BYTES;

/// What `handle` returned.
pub(super) type Returned = Result<Bytes, ReturnedError>;

/// A `list<u8>` from the guest: its bytes, or, over [`MAX_RETURNED_BYTES`], only its length.
#[derive(Debug)]
pub(crate) enum Bytes {
    Kept(Vec<u8>),
    TooLarge(usize),
}

/// A `string` from the guest: its text, or, over [`MAX_RETURNED_BYTES`] in the guest's own
/// encoding, only that length in bytes.
#[derive(Debug)]
pub(crate) enum Text {
    Kept(String),
    TooLarge(usize),
}

/// `job-error` of wit/job.wit, its messages lifted as [`Text`].
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift, Debug)]
#[component(variant)]
pub(crate) enum ReturnedError {
    #[component(name = "retry")]
    Retry(Text),
    #[component(name = "fail")]
    Fail(Text),
}

/// Checks once, when a handler is loaded, that the component's `handle` lifts into this
/// module's types (it does whenever `bindgen!`'s own check of the export passed), so that
/// [`handle`] may make its typed function without checking it again for every call.
pub(super) fn check(pre: &bindings::HandlerPre<super::HostState>) -> wasmtime::Result<()> {
    let instance_pre = pre.instance_pre();
    let Some((wasmtime::component::types::ComponentItem::ComponentFunc(func), _)) =
        instance_pre.component().get_export(None, "handle")
    else {
        wasmtime::bail!("no `handle` function export");
    };
    func.typecheck::<(&bindings::Job,), (Returned,)>(&instance_pre.instance_type())
}

/// The instance's `handle` export, its result lifted by this module's types.
#[allow(unsafe_code)]
pub(super) fn handle<'a>(
    instance: &bindings::Handler,
) -> TypedFunc<(&'a bindings::Job,), (Returned,)> {
    let func = *instance.func_handle().func();
    // SAFETY: `check` ran for this instance's component when its handler was loaded: the
    // signature matches the export's type, as `TypedFunc::new_unchecked` requires.
    unsafe { TypedFunc::new_unchecked(func) }
}

/// The length field of a pointer pair as lifted from core values (32-bit memories).
fn flat_len(src: &[wasmtime::ValRaw; 2]) -> usize {
    usize::try_from(src[1].get_u32()).unwrap_or(usize::MAX)
}

/// The length field of a pointer pair as stored in memory: bytes 4..8, little-endian.
fn stored_len(bytes: &[u8]) -> usize {
    let mut len = [0u8; 4];
    if let Some(field) = bytes.get(4..8) {
        len.copy_from_slice(field);
    }
    usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX)
}

// SAFETY: the same core representation, size and alignment as `Vec<u8>` (a pointer pair),
// whose type check it uses.
#[allow(unsafe_code)]
unsafe impl ComponentType for Bytes {
    type Lower = <Vec<u8> as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Vec<u8> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<u8> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifts through wasmtime's own `WasmList<u8>` (bounds check, no copy) and `Vec<u8>`.
#[allow(unsafe_code)]
unsafe impl Lift for Bytes {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let list = WasmList::<u8>::linear_lift_from_flat(cx, ty, src)?;
        if list.len() > MAX_RETURNED_BYTES {
            return Ok(Bytes::TooLarge(list.len()));
        }
        Vec::<u8>::linear_lift_from_flat(cx, ty, src).map(Bytes::Kept)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let list = WasmList::<u8>::linear_lift_from_memory(cx, ty, bytes)?;
        if list.len() > MAX_RETURNED_BYTES {
            return Ok(Bytes::TooLarge(list.len()));
        }
        Vec::<u8>::linear_lift_from_memory(cx, ty, bytes).map(Bytes::Kept)
    }
}

/// A string's length in bytes in the guest's encoding, from the length field of its pointer
/// pair (as wasmtime's `WasmStr` reads it).
fn text_bytes(cx: &LiftContext<'_>, len: usize) -> usize {
    use wasmtime_environ::component::StringEncoding;
    const UTF16_TAG: usize = 1 << 31;
    match cx.options().string_encoding {
        StringEncoding::Utf8 => len,
        StringEncoding::Utf16 => len.saturating_mul(2),
        StringEncoding::CompactUtf16 if len & UTF16_TAG == 0 => len,
        StringEncoding::CompactUtf16 => (len ^ UTF16_TAG).saturating_mul(2),
    }
}

// SAFETY: the same core representation, size and alignment as `String` (a pointer pair),
// whose type check it uses.
#[allow(unsafe_code)]
unsafe impl ComponentType for Text {
    type Lower = <String as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <String as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifts through wasmtime's own `WasmStr` (bounds and alignment checks, no copy) and
// `String` (decoding and validation).
#[allow(unsafe_code)]
unsafe impl Lift for Text {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_flat(cx, ty, src)?;
        let bytes = text_bytes(cx, flat_len(src));
        if bytes > MAX_RETURNED_BYTES {
            return Ok(Text::TooLarge(bytes));
        }
        String::linear_lift_from_flat(cx, ty, src).map(Text::Kept)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_memory(cx, ty, bytes)?;
        let len = text_bytes(cx, stored_len(bytes));
        if len > MAX_RETURNED_BYTES {
            return Ok(Text::TooLarge(len));
        }
        String::linear_lift_from_memory(cx, ty, bytes).map(Text::Kept)
    }
}
