// The envelope around a serialised projection state: magic, the state's
// name and version, a checksum, then the cereal (portable binary) body.
// The checksum is checked before cereal sees the body, so corrupt bytes are
// refused as Corruption instead of making cereal allocate nonsense.
#ifndef DISPATCH_LIB_REPLAY_ENVELOPE_H_
#define DISPATCH_LIB_REPLAY_ENVELOPE_H_

#include <cereal/archives/portable_binary.hpp>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>

#include "dispatch/status.h"

namespace dispatch::internal {

inline uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// "DSP1" name '\0' version(int32 LE) checksum(uint64 LE) body
template <class T>
std::string SealState(std::string_view name, int32_t version, T& data) {
  std::ostringstream os;
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(data);
  }
  std::string body = std::move(os).str();
  std::string out = "DSP1";
  out.append(name);
  out.push_back('\0');
  char v[4], c[8];
  uint64_t sum = Fnv1a64(body);
  for (int i = 0; i < 4; ++i) v[i] = static_cast<char>((static_cast<uint32_t>(version) >> (8 * i)) & 0xff);
  for (int i = 0; i < 8; ++i) c[i] = static_cast<char>((sum >> (8 * i)) & 0xff);
  out.append(v, 4);
  out.append(c, 8);
  out.append(body);
  return out;
}

template <class T>
Status OpenState(std::string_view name, int32_t version, std::string_view in, T* data) {
  size_t head = 4 + name.size() + 1;
  if (in.size() < head + 12 || in.substr(0, 4) != "DSP1" || in.substr(4, name.size()) != name ||
      in[4 + name.size()] != '\0') {
    return Status::Corruption(std::string("not a '") + std::string(name) + "' state");
  }
  uint32_t v = 0;
  uint64_t sum = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[head + i])) << (8 * i);
  for (int i = 0; i < 8; ++i) sum |= static_cast<uint64_t>(static_cast<unsigned char>(in[head + 4 + i])) << (8 * i);
  if (static_cast<int32_t>(v) != version) {
    return Status::InvalidArgument("state version " + std::to_string(static_cast<int32_t>(v)) +
                                   " is not " + std::to_string(version));
  }
  std::string_view body = in.substr(head + 12);
  if (Fnv1a64(body) != sum) return Status::Corruption("state checksum mismatch");
  try {
    std::istringstream is{std::string(body)};
    cereal::PortableBinaryInputArchive ar(is);
    ar(*data);
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("state is malformed: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_REPLAY_ENVELOPE_H_
