import CSideTuneSHA256
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SHA-256 (FIPS 180-4), streaming. Ours because the assets need only this one digest and
/// swift-crypto would pull BoringSSL into the build. Blocks are read straight from the caller's
/// buffer with big-endian loads, so hashing is not limited by copying. On CPUs with the SHA
/// extensions the rounds run there (CSideTuneSHA256, about 6x faster).
public struct SHA256: Sendable {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    /// Bytes of an unfinished block carried between `update` calls.
    private var pending: [UInt8] = []
    private var totalBytes: UInt64 = 0

    /// Whether this CPU and build run the compression on the SHA extensions (CSideTuneSHA256).
    public static let hardwareAvailable = sidetune_sha256_hardware_available() != 0
    /// The SHA extensions when available; false: the portable rounds below (the tests compare both).
    private let hardware: Bool

    public init() { hardware = Self.hardwareAvailable }

    /// `hardware: false` always takes the portable rounds.
    public init(hardware: Bool) { self.hardware = hardware && Self.hardwareAvailable }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard data.count > 0, let base = data.baseAddress else { return }
        totalBytes &+= UInt64(data.count)
        var p = base
        var left = data.count
        if !pending.isEmpty {
            let take = min(64 - pending.count, left)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: p, count: take))
            p += take
            left -= take
            if pending.count < 64 { return }
            pending.withUnsafeBytes { Self.compress(&h, hardware, $0.baseAddress!, blocks: 1) }
            pending.removeAll(keepingCapacity: true)
        }
        let blocks = left / 64
        if blocks > 0 { Self.compress(&h, hardware, p, blocks: blocks) }
        p += blocks * 64
        left -= blocks * 64
        if left > 0 { pending.append(contentsOf: UnsafeRawBufferPointer(start: p, count: left)) }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ string: String) {
        update(Array(string.utf8))
    }

    /// Pads, processes the last block(s) and returns the 32-byte digest. The value is spent after.
    public mutating func finalize() -> [UInt8] {
        let bitLength = totalBytes &* 8
        var tail = pending
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        tail.withUnsafeBytes { Self.compress(&h, hardware, $0.baseAddress!, blocks: tail.count / 64) }
        pending = []
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for word in h { for shift in [24, 16, 8, 0] { out.append(UInt8(truncatingIfNeeded: word >> UInt32(shift))) } }
        return out
    }

    /// Lowercase hex of the digest, as `sha256sum` prints it.
    public mutating func finalizeHex() -> String {
        Self.hex(finalize())
    }

    public static func hex(_ digest: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var s: [UInt8] = []
        s.reserveCapacity(digest.count * 2)
        for b in digest { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return String(decoding: s, as: UTF8.self)
    }

    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var s = SHA256()
        s.update(bytes)
        return s.finalize()
    }

    public static func hexDigest(_ bytes: [UInt8]) -> String { hex(hash(bytes)) }

    /// Hex digest of a file, read in 1 MiB chunks (constant memory for any size).
    public static func hexDigest(ofFile path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw AssetError.io(path: path, message: "cannot open for hashing: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = 1 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buf.deallocate() }
        var s = SHA256()
        while true {
            let n = read(fd, buf.baseAddress!, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw AssetError.io(path: path, message: "read failed while hashing: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            s.update(UnsafeRawBufferPointer(start: buf.baseAddress!, count: n))
        }
        return s.finalizeHex()
    }

    @inline(__always) private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    /// One round with the working variables passed in rotated order, so eight calls per loop
    /// step need no register shuffling (the classic unrolled form; measured ~10-20% faster here
    /// than moving a..h every round).
    @inline(__always)
    private static func round(_ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32,
                              _ e: UInt32, _ f: UInt32, _ g: UInt32, _ h: inout UInt32, _ kw: UInt32) {
        let t1 = h &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ (g ^ (e & (f ^ g))) &+ kw
        d = d &+ t1
        h = t1 &+ (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) | (c & (a | b)))
    }

    private static func compress(_ h: inout [UInt32], _ hardware: Bool, _ data: UnsafeRawPointer, blocks: Int) {
        if hardware {
            h.withUnsafeMutableBufferPointer {
                sidetune_sha256_blocks_hardware($0.baseAddress!, data.assumingMemoryBound(to: UInt8.self), blocks)
            }
        } else {
            compressPortable(&h, data, blocks: blocks)
        }
    }

    private static func compressPortable(_ state: inout [UInt32], _ data: UnsafeRawPointer, blocks: Int) {
        // The 64 round constants, from the C target (the SHA-extension rounds use them too).
        let k = sidetune_sha256_round_constants()!
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { wb in
            let w = wb.baseAddress!
            var h0 = state[0], h1 = state[1], h2 = state[2], h3 = state[3]
            var h4 = state[4], h5 = state[5], h6 = state[6], h7 = state[7]
            for block in 0..<blocks {
                let p = data + block * 64
                for t in 0..<16 { w[t] = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self)) }
                for t in 16..<64 {
                    let x = w[t - 15], y = w[t - 2]
                    w[t] = w[t - 16] &+ (rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3)) &+ w[t - 7]
                        &+ (rotr(y, 17) ^ rotr(y, 19) ^ (y >> 10))
                }
                var a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7
                var t = 0
                while t < 64 {
                    round(a, b, c, &d, e, f, g, &h, k[t] &+ w[t])
                    round(h, a, b, &c, d, e, f, &g, k[t + 1] &+ w[t + 1])
                    round(g, h, a, &b, c, d, e, &f, k[t + 2] &+ w[t + 2])
                    round(f, g, h, &a, b, c, d, &e, k[t + 3] &+ w[t + 3])
                    round(e, f, g, &h, a, b, c, &d, k[t + 4] &+ w[t + 4])
                    round(d, e, f, &g, h, a, b, &c, k[t + 5] &+ w[t + 5])
                    round(c, d, e, &f, g, h, a, &b, k[t + 6] &+ w[t + 6])
                    round(b, c, d, &e, f, g, h, &a, k[t + 7] &+ w[t + 7])
                    t += 8
                }
                h0 &+= a; h1 &+= b; h2 &+= c; h3 &+= d
                h4 &+= e; h5 &+= f; h6 &+= g; h7 &+= h
            }
            state = [h0, h1, h2, h3, h4, h5, h6, h7]
        }
    }
}
