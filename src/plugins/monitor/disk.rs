//! Used share of a file system, for the disk alert.

use std::path::Path;

/// `(used bytes, total bytes)` of the file system holding `path`.
pub fn usage(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    #[allow(unsafe_code)]
    // SAFETY: statvfs writes a statvfs struct into the buffer we pass and reads the C string;
    // the struct is only read after a 0 return, when it is fully initialised.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), s.as_mut_ptr()) != 0 {
            return None;
        }
        s.assume_init()
    };
    let block = st.f_frsize as u64;
    let total = st.f_blocks as u64 * block;
    let free = st.f_bavail as u64 * block;
    Some((total.saturating_sub(free), total))
}
