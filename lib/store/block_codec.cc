// Block codec implementation (see block_codec.h for the format).
#include "store/block_codec.h"

#include <lz4.h>

#include <cstring>
#include <memory>

namespace dispatch::internal {
namespace {

inline void PutVarint(std::string* out, uint64_t v) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

inline bool GetVarint(const char** p, const char* end, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && *p < end; shift += 7) {
    uint64_t byte = static_cast<unsigned char>(**p);
    ++*p;
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

inline uint64_t ZigZag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
inline int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

inline void PutBytes(std::string* out, std::string_view s) {
  PutVarint(out, s.size());
  out->append(s.data(), s.size());
}

inline bool GetBytes(const char** p, const char* end, std::string_view* s) {
  uint64_t n;
  if (!GetVarint(p, end, &n)) return false;
  if (n > static_cast<uint64_t>(end - *p)) return false;
  *s = std::string_view(*p, n);
  *p += n;
  return true;
}

void Encode(int64_t ts, Encoding enc, std::string_view channel, std::string_view type,
            std::string_view id, std::string_view payload, int64_t* prev_ts, std::string* body) {
  PutVarint(body, ZigZag(static_cast<int64_t>(static_cast<uint64_t>(ts) - static_cast<uint64_t>(*prev_ts))));
  *prev_ts = ts;
  body->push_back(static_cast<char>(enc));
  PutBytes(body, channel);
  PutBytes(body, type);
  PutBytes(body, id);
  PutBytes(body, payload);
}

constexpr size_t kMinCompressBytes = 128;

}  // namespace

void EncodeEvent(const NewEvent& e, int64_t ts_us, int64_t* prev_ts, std::string* body) {
  Encode(ts_us, e.encoding, e.channel, e.type, e.id, e.payload, prev_ts, body);
}

void EncodeEventView(const EventView& e, int64_t* prev_ts, std::string* body) {
  Encode(e.ts_us, e.encoding, e.channel, e.type, e.id, e.payload, prev_ts, body);
}

Codec CompressBody(std::string_view body, std::string* out) {
  if (body.size() >= kMinCompressBytes && body.size() < static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
    int bound = LZ4_compressBound(static_cast<int>(body.size()));
    // Compressed into this thread's scratch buffer, which is never
    // zero-filled (growing `out` to the bound and shrinking it to the result
    // zero-filled up to the bound, ~a block's size, for every block), then
    // copied: only the compressed bytes.
    thread_local std::unique_ptr<char[]> scratch;
    thread_local size_t scratch_size = 0;
    if (scratch_size < static_cast<size_t>(bound)) {
      scratch.reset(new char[static_cast<size_t>(bound)]);
      scratch_size = static_cast<size_t>(bound);
    }
    int n = LZ4_compress_default(body.data(), scratch.get(), static_cast<int>(body.size()), bound);
    // Keep the compressed form only if it saves at least 1/16.
    if (n > 0 && static_cast<size_t>(n) < body.size() - body.size() / 16) {
      out->assign(scratch.get(), static_cast<size_t>(n));
      return Codec::kLz4;
    }
  }
  out->assign(body.data(), body.size());
  return Codec::kNone;
}

Status DecompressBody(Codec codec, std::string_view data, size_t raw_size, std::string* out) {
  switch (codec) {
    case Codec::kNone:
      if (data.size() != raw_size) return Status::Corruption("block size does not match its header");
      out->assign(data.data(), data.size());
      return Status::Ok();
    case Codec::kLz4: {
      if (raw_size > (size_t{1} << 31)) return Status::Corruption("block raw size out of range");
      // resize without zero-filling cost mattering: the buffer is reused.
      if (out->size() < raw_size) out->resize(raw_size);
      int n = LZ4_decompress_safe(data.data(), out->data(), static_cast<int>(data.size()),
                                  static_cast<int>(raw_size));
      if (n < 0 || static_cast<size_t>(n) != raw_size) {
        return Status::Corruption("block does not decompress (lz4)");
      }
      out->resize(raw_size);
      return Status::Ok();
    }
  }
  return Status::Corruption("unknown block codec " + std::to_string(static_cast<int>(codec)));
}

bool BlockReader::Next(EventView* v) {
  if (p_ == end_) return false;
  uint64_t zz;
  if (!GetVarint(&p_, end_, &zz) || p_ == end_) {
    status_ = Status::Corruption("truncated event header in block");
    p_ = end_;
    return false;
  }
  prev_ts_ = static_cast<int64_t>(static_cast<uint64_t>(prev_ts_) + static_cast<uint64_t>(UnZigZag(zz)));
  v->ts_us = prev_ts_;
  auto enc = static_cast<uint8_t>(*p_++);
  if (enc > static_cast<uint8_t>(Encoding::kText)) {
    status_ = Status::Corruption("unknown payload encoding in block");
    p_ = end_;
    return false;
  }
  v->encoding = static_cast<Encoding>(enc);
  if (!GetBytes(&p_, end_, &v->channel) || !GetBytes(&p_, end_, &v->type) ||
      !GetBytes(&p_, end_, &v->id) || !GetBytes(&p_, end_, &v->payload)) {
    status_ = Status::Corruption("truncated event in block");
    p_ = end_;
    return false;
  }
  return true;
}

}  // namespace dispatch::internal
