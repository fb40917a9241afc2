/// A minimal reader of the protobuf wire format (https://protobuf.dev/programming-guides/encoding/):
/// enough to walk ONNX files. Every read is bounded by the bytes left in the current message, so a
/// truncated or corrupt file gives an `ONNXError` naming the message and byte offset, never a crash.
///
/// Wire types: 0 varint, 1 fixed64, 2 length-delimited (strings, bytes, sub-messages, packed
/// repeated scalars), 5 fixed32. Types 3 and 4 (proto1 groups) are rejected; 6 and 7 do not exist.
public enum WireType: Int, Sendable {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// Why an ONNX (protobuf) file could not be read. `context` is the message path, e.g.
/// `ModelProto.graph.node[12].attribute[0]`; `offset` the absolute byte offset of the problem.
public struct ONNXError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable, Equatable {
        /// The file could not be opened or mapped.
        case io
        /// A varint, fixed-width value or length-delimited field runs past the end of its message.
        case truncated
        /// A varint longer than 10 bytes.
        case malformedVarint
        /// Wire type 6 or 7, or field number 0.
        case malformedTag
        /// A known field arrives with the wrong wire type (e.g. a name encoded as a varint).
        case wrongWireType
        /// Groups (wire types 3/4) or external tensor data: valid protobuf/ONNX that we do not read.
        case unsupported
        /// A tensor whose dims and data disagree, or a negative dimension.
        case badTensor
        /// A graph that does not have the structure a loader expects (names the node or tensor).
        case badGraph
        /// A tensor or node name the graph does not hold.
        case missing
    }

    public let kind: Kind
    public let context: String
    public let offset: Int?
    public let message: String

    public init(_ kind: Kind, context: String, offset: Int? = nil, _ message: String) {
        self.kind = kind
        self.context = context
        self.offset = offset
        self.message = message
    }

    public var description: String {
        let at = offset.map { " at byte \($0)" } ?? ""
        return "ONNX \(kind.rawValue) in \(context)\(at): \(message)"
    }
}

/// Reads fields of one message from `bytes[start..<end]`. Offsets are absolute in the buffer, so
/// sub-readers report positions in the file.
public struct ProtobufReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position: Int
    public let end: Int
    /// Message path for errors.
    public let context: String

    public init(bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil, context: String) {
        self.bytes = bytes
        let r = range ?? 0..<bytes.count
        position = r.lowerBound
        end = r.upperBound
        self.context = context
    }

    public var isAtEnd: Bool { position >= end }

    func error(_ kind: ONNXError.Kind, _ message: String, at offset: Int? = nil) -> ONNXError {
        ONNXError(kind, context: context, offset: offset ?? position, message)
    }

    /// The next field's number and wire type, or nil at the end of the message.
    public mutating func nextTag() throws(ONNXError) -> (field: Int, wire: WireType)? {
        if position >= end { return nil }
        let at = position
        let key = try readVarint()
        let wireRaw = Int(key & 7)
        let field = key >> 3
        guard let wire = WireType(rawValue: wireRaw) else {
            throw error(.malformedTag, "wire type \(wireRaw) does not exist (tag byte 0x\(String(key & 0xff, radix: 16)))", at: at)
        }
        guard field != 0, field <= (1 << 29) - 1 else {
            throw error(.malformedTag, "field number \(field) is out of range", at: at)
        }
        return (Int(field), wire)
    }

    public mutating func readVarint() throws(ONNXError) -> UInt64 {
        let start = position
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else {
                throw error(.truncated, "varint runs past the end of the message (started at byte \(start))", at: start)
            }
            let b = bytes[position]
            position += 1
            if shift == 63 && b > 1 {
                throw error(.malformedVarint, "varint does not fit in 64 bits", at: start)
            }
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw error(.malformedVarint, "varint longer than 10 bytes", at: start) }
        }
    }

    public mutating func readFixed32() throws(ONNXError) -> UInt32 {
        guard end - position >= 4 else { throw error(.truncated, "fixed32 needs 4 bytes, \(end - position) left") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)
        position += 4
        return UInt32(littleEndian: v)
    }

    public mutating func readFixed64() throws(ONNXError) -> UInt64 {
        guard end - position >= 8 else { throw error(.truncated, "fixed64 needs 8 bytes, \(end - position) left") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self)
        position += 8
        return UInt64(littleEndian: v)
    }

    /// The byte range of a length-delimited field's payload (the reader moves past it).
    public mutating func readLengthDelimited() throws(ONNXError) -> Range<Int> {
        let at = position
        let n = try readVarint()
        guard n <= UInt64(end - position) else {
            throw error(.truncated, "length-delimited field of \(n) bytes, only \(end - position) left in the message", at: at)
        }
        let r = position..<(position + Int(n))
        position = r.upperBound
        return r
    }

    public mutating func skip(_ wire: WireType) throws(ONNXError) {
        switch wire {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .fixed32: _ = try readFixed32()
        case .lengthDelimited: _ = try readLengthDelimited()
        case .startGroup, .endGroup: throw error(.unsupported, "protobuf groups (wire type \(wire.rawValue)) are not supported")
        }
    }

    // MARK: Typed field helpers (check the wire type first)

    func expect(_ wire: WireType, _ want: WireType, field: Int, _ name: String) throws(ONNXError) {
        if wire != want {
            throw error(.wrongWireType, "field \(field) (\(name)) has wire type \(wire.rawValue), expected \(want.rawValue)")
        }
    }

    public mutating func string(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> String {
        try expect(wire, .lengthDelimited, field: field, name)
        let r = try readLengthDelimited()
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    public mutating func bytesField(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> [UInt8] {
        try expect(wire, .lengthDelimited, field: field, name)
        return Array(UnsafeRawBufferPointer(rebasing: bytes[try readLengthDelimited()]))
    }

    public mutating func int64(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> Int64 {
        try expect(wire, .varint, field: field, name)
        return Int64(bitPattern: try readVarint())
    }

    /// int32 fields are sign-extended to 64 bits on the wire; truncate as protobuf does.
    public mutating func int32(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> Int32 {
        try expect(wire, .varint, field: field, name)
        return Int32(truncatingIfNeeded: try readVarint())
    }

    public mutating func float(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> Float {
        try expect(wire, .fixed32, field: field, name)
        return Float(bitPattern: try readFixed32())
    }

    public mutating func double(_ wire: WireType, field: Int, _ name: String) throws(ONNXError) -> Double {
        try expect(wire, .fixed64, field: field, name)
        return Double(bitPattern: try readFixed64())
    }

    /// A sub-reader over a length-delimited sub-message.
    public mutating func message(_ wire: WireType, field: Int, _ name: String, context sub: String) throws(ONNXError) -> ProtobufReader {
        try expect(wire, .lengthDelimited, field: field, name)
        let r = try readLengthDelimited()
        return ProtobufReader(bytes: bytes, range: r, context: context + "." + sub)
    }

    /// Repeated varint scalars, packed (one length-delimited run) or not (one value per tag):
    /// parsers must accept both.
    public mutating func appendVarints(_ wire: WireType, field: Int, _ name: String, into out: inout [Int64]) throws(ONNXError) {
        if wire == .varint { out.append(Int64(bitPattern: try readVarint())); return }
        try expect(wire, .lengthDelimited, field: field, name)
        let r = try readLengthDelimited()
        var sub = ProtobufReader(bytes: bytes, range: r, context: context + "." + name)
        while !sub.isAtEnd { out.append(Int64(bitPattern: try sub.readVarint())) }
    }

    /// Repeated floats, packed or not.
    public mutating func appendFloats(_ wire: WireType, field: Int, _ name: String, into out: inout [Float]) throws(ONNXError) {
        if wire == .fixed32 { out.append(Float(bitPattern: try readFixed32())); return }
        try expect(wire, .lengthDelimited, field: field, name)
        let r = try readLengthDelimited()
        guard r.count % 4 == 0 else {
            throw error(.truncated, "packed floats (\(name)) of \(r.count) bytes, not a multiple of 4", at: r.lowerBound)
        }
        out.reserveCapacity(out.count + r.count / 4)
        for i in stride(from: r.lowerBound, to: r.upperBound, by: 4) {
            out.append(Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self))))
        }
    }

    /// Repeated doubles, packed or not.
    public mutating func appendDoubles(_ wire: WireType, field: Int, _ name: String, into out: inout [Double]) throws(ONNXError) {
        if wire == .fixed64 { out.append(Double(bitPattern: try readFixed64())); return }
        try expect(wire, .lengthDelimited, field: field, name)
        let r = try readLengthDelimited()
        guard r.count % 8 == 0 else {
            throw error(.truncated, "packed doubles (\(name)) of \(r.count) bytes, not a multiple of 8", at: r.lowerBound)
        }
        for i in stride(from: r.lowerBound, to: r.upperBound, by: 8) {
            out.append(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))))
        }
    }
}
