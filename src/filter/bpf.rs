//! tcpdump expressions on the inner frames, compiled by libpcap itself, so
//! the syntax and meaning are exactly tcpdump's.
//!
//! libpcap is opened at run time (`libpcap.so.0.8`, the Debian/Ubuntu name,
//! then `libpcap.so.1`, then `libpcap.so`) with libloading, so building
//! mirrorcap needs no libpcap headers and a config without `bpf` needs no
//! libpcap at all. An expression is compiled once, against a "dead" Ethernet
//! handle (`pcap_open_dead` + `pcap_compile`); each frame is then tested
//! with `pcap_offline_filter`, libpcap's BPF interpreter: a function call, no
//! syscall, no allocation.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::{Arc, OnceLock};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BpfError {
    #[error(
        "libpcap is not installed (tried libpcap.so.0.8, libpcap.so.1, libpcap.so: {0}); `bpf` needs it: apt-get install libpcap0.8 (Debian/Ubuntu) or dnf install libpcap (Fedora/RHEL)"
    )]
    NoLibpcap(String),
    #[error("{expr:?} is not a valid tcpdump expression: {why}")]
    Compile { expr: String, why: String },
}

#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

#[repr(C)]
struct PcapPkthdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile =
    unsafe extern "C" fn(*mut c_void, *mut BpfProgram, *const c_char, c_int, u32) -> c_int;
type OfflineFilter = unsafe extern "C" fn(*const BpfProgram, *const PcapPkthdr, *const u8) -> c_int;
type GetErr = unsafe extern "C" fn(*mut c_void) -> *mut c_char;
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type Close = unsafe extern "C" fn(*mut c_void);

/// The libpcap functions mirrorcap uses.
struct Libpcap {
    _lib: libloading::Library,
    open_dead: OpenDead,
    compile: Compile,
    offline_filter: OfflineFilter,
    geterr: GetErr,
    freecode: FreeCode,
    close: Close,
}

fn libpcap() -> Result<Arc<Libpcap>, BpfError> {
    static LIB: OnceLock<Result<Arc<Libpcap>, BpfError>> = OnceLock::new();
    LIB.get_or_init(|| {
        let mut last = String::new();
        for name in ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"] {
            // SAFETY: loading libpcap runs no initialisers with preconditions.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => {
                    // SAFETY: the signatures match libpcap's pcap.h.
                    let l = unsafe {
                        Libpcap {
                            open_dead: *lib
                                .get::<OpenDead>(b"pcap_open_dead\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            compile: *lib
                                .get::<Compile>(b"pcap_compile\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            offline_filter: *lib
                                .get::<OfflineFilter>(b"pcap_offline_filter\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            geterr: *lib
                                .get::<GetErr>(b"pcap_geterr\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            freecode: *lib
                                .get::<FreeCode>(b"pcap_freecode\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            close: *lib
                                .get::<Close>(b"pcap_close\0")
                                .map_err(|e| BpfError::NoLibpcap(e.to_string()))?,
                            _lib: lib,
                        }
                    };
                    return Ok(Arc::new(l));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(BpfError::NoLibpcap(last))
    })
    .clone()
}

/// A compiled tcpdump expression.
pub struct Bpf {
    expr: String,
    program: BpfProgram,
    lib: Arc<Libpcap>,
}

// SAFETY: the program is immutable after compilation and
// pcap_offline_filter only reads it.
unsafe impl Send for Bpf {}
unsafe impl Sync for Bpf {}

impl std::fmt::Debug for Bpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bpf({:?})", self.expr)
    }
}

/// Link type of the inner frames.
const DLT_EN10MB: c_int = 1;
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

impl Bpf {
    /// Compiles `expr` for Ethernet frames, as `tcpdump` would.
    pub fn compile(expr: &str) -> Result<Bpf, BpfError> {
        let lib = libpcap()?;
        let cexpr = CString::new(expr).map_err(|_| BpfError::Compile {
            expr: expr.to_string(),
            why: "contains a NUL byte".into(),
        })?;
        // SAFETY: libpcap calls with valid arguments; the dead handle is
        // closed before returning and the program outlives it as libpcap
        // documents.
        unsafe {
            let p = (lib.open_dead)(DLT_EN10MB, 262_144);
            if p.is_null() {
                return Err(BpfError::Compile {
                    expr: expr.to_string(),
                    why: "pcap_open_dead failed".into(),
                });
            }
            let mut program = BpfProgram {
                bf_len: 0,
                bf_insns: std::ptr::null_mut(),
            };
            let r = (lib.compile)(p, &mut program, cexpr.as_ptr(), 1, PCAP_NETMASK_UNKNOWN);
            if r != 0 {
                let why = CStr::from_ptr((lib.geterr)(p))
                    .to_string_lossy()
                    .into_owned();
                (lib.close)(p);
                return Err(BpfError::Compile {
                    expr: expr.to_string(),
                    why,
                });
            }
            (lib.close)(p);
            Ok(Bpf {
                expr: expr.to_string(),
                program,
                lib,
            })
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether the expression accepts `frame` (captured bytes) whose
    /// length on the wire was `wire_len`.
    #[inline]
    pub fn matches(&self, frame: &[u8], wire_len: usize) -> bool {
        let hdr = PcapPkthdr {
            ts: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            caplen: frame.len() as u32,
            len: wire_len.max(frame.len()) as u32,
        };
        // SAFETY: the program is valid; hdr.caplen bytes are readable.
        unsafe { (self.lib.offline_filter)(&self.program, &hdr, frame.as_ptr()) != 0 }
    }
}

impl Drop for Bpf {
    fn drop(&mut self) {
        // SAFETY: compiled by pcap_compile, freed once.
        unsafe { (self.lib.freecode)(&mut self.program) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_filters() {
        let Ok(b) = Bpf::compile("udp port 53") else {
            panic!("libpcap is needed for the tests: apt-get install libpcap0.8")
        };
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        assert!(b.matches(&f, f.len()));
        f[14 + 20 + 3] = 54;
        assert!(!b.matches(&f, f.len()));
        assert!(!b.matches(&f[..20], 42));
    }

    #[test]
    fn syntax_error_says_why() {
        let e = Bpf::compile("tcp port banana").unwrap_err().to_string();
        assert!(
            e.contains("\"tcp port banana\" is not a valid tcpdump expression"),
            "{e}"
        );
    }
}
