/* One RTP packet to many subscribers, in C: the per-subscriber work of an SFU's fan-out.
 *
 * For each line (one subscriber's sending m-line) the packet is built in a scratch buffer with the
 * line's own header (payload type, sequence number, timestamp, SSRC) and extension block around the
 * publisher's payload, protected in place by libsrtp's srtp_protect (the one pylibsrtp is linked to,
 * passed in as a function pointer) and sent with one sendto(2) on the line's socket. The Python side
 * (sfu_geofence/rtc/fanout.py) binds lines, decides which lines are ready and reads the counters.
 */

static int sfu_fanout(sfu_line *const *lines, int count, sfu_protect_fn protect, unsigned char *scratch,
                      int scratch_limit, const char *payload, int payload_length, int marker,
                      int payload_type, unsigned int sequence_number, unsigned int timestamp,
                      int audio_level, const char *abs_send_time, unsigned long long ntp)
{
    int sent = 0;
    for (int i = 0; i < count; i++) {
        sfu_line *line = lines[i];
        if (line->fd < 0)
            continue;
        unsigned char pt = line->pt_map[payload_type & 0x7f];
        if (!pt)
            continue;
        const unsigned char *block = line->without;
        int block_length = line->without_length;
        unsigned char variable = 0;
        int has_variable = 0;
        if (line->extension_mode == 1) {
            has_variable = 1;
        } else if (line->extension_mode == 2 && audio_level >= 0) {
            has_variable = 2;
            variable = (unsigned char)audio_level;
        }
        if (has_variable) {
            block = line->prefix;
            block_length = line->prefix_length;
        }
        int extra = has_variable == 1 ? 3 : (has_variable == 2 ? 1 : 0);
        int extension_length = block_length + extra + (has_variable ? line->suffix_length : 0);
        int size = 12 + extension_length + payload_length;
        if (size > scratch_limit) {
            line->send_errors++;
            continue;
        }
        unsigned int out_sequence = (sequence_number + line->sequence_offset) & 0xffff;
        unsigned int out_timestamp = (timestamp + line->timestamp_offset) & 0xffffffffu;
        unsigned int ssrc = line->ssrc;
        unsigned char *p = scratch;
        p[0] = extension_length ? 0x90 : 0x80;
        p[1] = (unsigned char)(((marker & 1) << 7) | (pt & 0x7f));
        p[2] = (unsigned char)(out_sequence >> 8);
        p[3] = (unsigned char)out_sequence;
        p[4] = (unsigned char)(out_timestamp >> 24);
        p[5] = (unsigned char)(out_timestamp >> 16);
        p[6] = (unsigned char)(out_timestamp >> 8);
        p[7] = (unsigned char)out_timestamp;
        p[8] = (unsigned char)(ssrc >> 24);
        p[9] = (unsigned char)(ssrc >> 16);
        p[10] = (unsigned char)(ssrc >> 8);
        p[11] = (unsigned char)ssrc;
        p += 12;
        memcpy(p, block, block_length);
        p += block_length;
        if (has_variable == 1) {
            memcpy(p, abs_send_time, 3);
            p += 3;
        } else if (has_variable == 2) {
            *p++ = variable;
        }
        if (has_variable && line->suffix_length) {
            memset(p, 0, line->suffix_length);
            p += line->suffix_length;
        }
        memcpy(p, payload, payload_length);
        int length = size;
        if (protect(line->srtp, scratch, &length) != 0) {
            line->send_errors++;
            continue;
        }
        if (sendto(line->fd, scratch, length, MSG_DONTWAIT, (const struct sockaddr *)line->address,
                   line->address_length) < 0) {
            line->send_errors++;
            continue;
        }
        sent++;
        line->packets_sent++;
        line->octets_sent += payload_length;
        line->last_rtp_timestamp = out_timestamp;
        line->last_ntp_timestamp = ntp;
        /* The SSRC's next number moves forward only (a reordered packet leaves it). */
        if (((out_sequence - line->next_sequence_number) & 0xffff) < 0x8000)
            line->next_sequence_number = (out_sequence + 1) & 0xffff;
    }
    return sent;
}
