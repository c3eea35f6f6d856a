//! Which file this native module was loaded from, so the Lua loader
//! (`kong_rs/loader.lua`) can tell when the library on disk was replaced.
//!
//! nginx's master keeps the Lua state of its first configuration, and with
//! it every library `require` opened: after `luarocks make` replaced the
//! `.so` and `kong reload` (a HUP) built a new Lua state, a plain `require`
//! asks `dlopen` for the same path, glibc finds the old library by that name
//! and the new workers run the old code. The loader asks [`is_current`]
//! whether the file at the path is still the one mapped here (same device
//! and inode) and, when it is not, opens it under another spelling of the
//! path, which glibc does not match by name.

use std::os::unix::fs::MetadataExt;

/// Device (major, minor) and inode of a file.
type FileId = (u64, u64, u64);

/// The file this library's code is mapped from, per `/proc/self/maps`.
/// `None` where that cannot be read (not Linux, no procfs).
fn own_file() -> Option<FileId> {
    let address = own_file as fn() -> Option<FileId> as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        // start-end perms offset major:minor inode path
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        if !(start..end).contains(&address) {
            return None;
        }
        let _perms = fields.next()?;
        let _offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode = fields.next()?.parse().ok()?;
        Some((
            u64::from_str_radix(major, 16).ok()?,
            u64::from_str_radix(minor, 16).ok()?,
            inode,
        ))
    })
}

/// The file at `path` now.
fn file_at(path: &str) -> Option<FileId> {
    let metadata = std::fs::metadata(path).ok()?;
    let dev = metadata.dev();
    Some((
        u64::from(libc::major(dev)),
        u64::from(libc::minor(dev)),
        metadata.ino(),
    ))
}

/// Whether `path` is the file this library was loaded from: `Some(false)`
/// when the file there was replaced since (or removed), `None` when it
/// cannot be told here.
pub(crate) fn is_current(path: &str) -> Option<bool> {
    let own = own_file()?;
    Some(file_at(path) == Some(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_its_own_file_and_another_file_is_not() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        // In `cargo test` this code is in the test executable itself.
        assert_eq!(is_current(exe), Some(true));
        assert_eq!(is_current("/proc/self/maps"), Some(false));
        assert_eq!(is_current("/nonexistent/kong_rs.so"), Some(false));
    }
}
