"""Builds ``sfu_geofence.rtc._fanout`` (``fanout.c``) with cffi, as aiortc builds its codecs' bindings.

Run by ``pip install`` (``setup.py``'s ``cffi_modules``); by hand: ``python sfu_geofence/rtc/fanout_build.py``
writes the module next to this file.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

CDEF = """
typedef struct {
    /* binding (written by Python; fd < 0: unbound, skipped) */
    int fd;
    unsigned int address_length;
    unsigned char address[28];
    void *srtp;
    /* the consumer currently on the line */
    unsigned int ssrc;
    unsigned int sequence_offset;
    unsigned int timestamp_offset;
    unsigned char pt_map[128];
    unsigned char extension_mode;
    unsigned char prefix_length;
    unsigned char suffix_length;
    unsigned char without_length;
    unsigned char prefix[32];
    unsigned char without[32];
    /* the line's SSRC state (sender reports, continuity across consumers) */
    unsigned char used;
    unsigned int next_sequence_number;
    unsigned int next_timestamp;
    unsigned int last_rtp_timestamp;
    unsigned long long last_ntp_timestamp;
    unsigned long long packets_sent;
    unsigned long long octets_sent;
    unsigned long long send_errors;
} sfu_line;

typedef int (*sfu_protect_fn)(void *, void *, int *);

static int sfu_fanout(sfu_line *const *lines, int count, sfu_protect_fn protect, unsigned char *scratch,
                      int scratch_limit, const char *payload, int payload_length, int marker,
                      int payload_type, unsigned int sequence_number, unsigned int timestamp,
                      int audio_level, const char *abs_send_time, unsigned long long ntp);
"""

PRELUDE = """
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "sfu_geofence.rtc._fanout",
    PRELUDE + CDEF.split("static int sfu_fanout")[0] + (HERE / "fanout.c").read_text(),
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent.parent), verbose=False)
