import Foundation

/// The parts of an ONNX model (onnx/onnx.proto, IR version 3+) that SideTune reads: the graph's
/// nodes, initializers, inputs and outputs. Field numbers follow onnx.proto:
///
///   ModelProto:     ir_version 1, opset_import 8 (OperatorSetIdProto: domain 1, version 2), graph 7
///   GraphProto:     node 1, name 2, initializer 5, input 11, output 12
///   NodeProto:      input 1, output 2, name 3, op_type 4, attribute 5, domain 7
///   AttributeProto: name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, type 20
///   TensorProto:    dims 1, data_type 2, float_data 4, int32_data 5, int64_data 7, name 8,
///                   raw_data 9, double_data 10, data_location 14 (1 = external)
///   ValueInfoProto: name 1, type 2 (TypeProto.tensor_type 1: elem_type 1, shape 2 (dim 1:
///                   dim_value 1, dim_param 2))
///
/// Other fields are skipped. Tensor bytes are not copied: `raw_data` is a range of the mapped
/// file, read on demand through `ONNXTensor.floats()`.
public final class ONNXModel: @unchecked Sendable {  // immutable after init
    public let path: String
    public let irVersion: Int64
    /// (domain, version) pairs; "" is the default ai.onnx domain.
    public let opsets: [(domain: String, version: Int64)]
    public let graph: ONNXGraph

    /// Opens and parses a file (memory-mapped).
    public convenience init(path: String) throws {
        let mapping: MappedFile
        do { mapping = try MappedFile(path: path) } catch {
            throw ONNXError(.io, context: path, "\(error)")
        }
        try self.init(source: ONNXBytes(mapping: mapping), path: path)
    }

    /// Parses bytes held in memory (tests, small files).
    public convenience init(bytes: [UInt8], name: String = "<memory>") throws {
        try self.init(source: ONNXBytes(copying: bytes), path: name)
    }

    init(source: ONNXBytes, path: String) throws(ONNXError) {
        self.path = path
        var r = ProtobufReader(bytes: source.bytes, context: "ModelProto")
        var ir: Int64 = 0
        var opsets: [(String, Int64)] = []
        var graph: ONNXGraph?
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: ir = try r.int64(w, field: f, "ir_version")
            case 7: graph = try ONNXGraph(reader: r.message(w, field: f, "graph", context: "graph"), source: source)
            case 8:
                var sub = try r.message(w, field: f, "opset_import", context: "opset_import[\(opsets.count)]")
                var domain = "", version: Int64 = 0
                while let (sf, sw) = try sub.nextTag() {
                    switch sf {
                    case 1: domain = try sub.string(sw, field: sf, "domain")
                    case 2: version = try sub.int64(sw, field: sf, "version")
                    default: try sub.skip(sw)
                    }
                }
                opsets.append((domain, version))
            default: try r.skip(w)
            }
        }
        guard let graph else { throw ONNXError(.badGraph, context: "ModelProto", "the model has no graph (field 7)") }
        irVersion = ir
        self.opsets = opsets
        self.graph = graph
    }
}

/// Owner of the bytes that tensors point into (a file mapping or a heap copy).
final class ONNXBytes: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    private let mapping: MappedFile?
    private let owned: UnsafeMutableRawBufferPointer?

    init(mapping: MappedFile) {
        self.mapping = mapping
        owned = nil
        bytes = mapping.bytes
    }

    init(copying src: [UInt8]) {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: max(src.count, 1), alignment: 16)
        src.withUnsafeBytes { buf.copyMemory(from: $0) }
        owned = buf
        mapping = nil
        bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buf)[0..<src.count])
    }

    deinit { owned?.deallocate() }
}

public struct ONNXGraph: Sendable {
    public var name = ""
    public var nodes: [ONNXNode] = []
    public var initializers: [ONNXTensor] = []
    public var inputs: [ONNXValueInfo] = []
    public var outputs: [ONNXValueInfo] = []

    init(reader: ProtobufReader, source: ONNXBytes) throws(ONNXError) {
        var r = reader
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: nodes.append(try ONNXNode(reader: r.message(w, field: f, "node", context: "node[\(nodes.count)]"), source: source))
            case 2: name = try r.string(w, field: f, "name")
            case 5: initializers.append(try ONNXTensor(reader: r.message(w, field: f, "initializer", context: "initializer[\(initializers.count)]"), source: source))
            case 11: inputs.append(try ONNXValueInfo(reader: r.message(w, field: f, "input", context: "input[\(inputs.count)]")))
            case 12: outputs.append(try ONNXValueInfo(reader: r.message(w, field: f, "output", context: "output[\(outputs.count)]")))
            default: try r.skip(w)
            }
        }
    }

    /// Initializers by name (the first one wins on duplicates, which ONNX forbids anyway).
    public func initializerMap() -> [String: ONNXTensor] {
        Dictionary(initializers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }
}

public struct ONNXNode: Sendable {
    public var name = ""
    public var opType = ""
    public var domain = ""
    public var inputs: [String] = []
    public var outputs: [String] = []
    public var attributes: [ONNXAttribute] = []

    init(reader: ProtobufReader, source: ONNXBytes) throws(ONNXError) {
        var r = reader
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: inputs.append(try r.string(w, field: f, "input"))
            case 2: outputs.append(try r.string(w, field: f, "output"))
            case 3: name = try r.string(w, field: f, "name")
            case 4: opType = try r.string(w, field: f, "op_type")
            case 5: attributes.append(try ONNXAttribute(reader: r.message(w, field: f, "attribute", context: "attribute[\(attributes.count)]"), source: source))
            case 7: domain = try r.string(w, field: f, "domain")
            default: try r.skip(w)
            }
        }
    }

    public func attribute(_ name: String) -> ONNXAttribute? { attributes.first { $0.name == name } }
}

public struct ONNXAttribute: Sendable {
    /// AttributeProto.AttributeType values.
    public enum Kind: Int32, Sendable {
        case undefined = 0, float = 1, int = 2, string = 3, tensor = 4, graph = 5
        case floats = 6, ints = 7, strings = 8, tensors = 9, graphs = 10
        case sparseTensor = 11, sparseTensors = 12, typeProto = 13, typeProtos = 14
    }

    public var name = ""
    /// The declared type (raw value kept when it is not a known `Kind`).
    public var typeCode: Int32 = 0
    public var f: Float = 0
    public var i: Int64 = 0
    public var s: [UInt8] = []
    public var t: ONNXTensor?
    public var floats: [Float] = []
    public var ints: [Int64] = []

    public var kind: Kind? { Kind(rawValue: typeCode) }
    public var string: String { String(decoding: s, as: UTF8.self) }

    init(reader: ProtobufReader, source: ONNXBytes) throws(ONNXError) {
        var r = reader
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: name = try r.string(w, field: f, "name")
            case 2: self.f = try r.float(w, field: f, "f")
            case 3: i = try r.int64(w, field: f, "i")
            case 4: s = try r.bytesField(w, field: f, "s")
            case 5: t = try ONNXTensor(reader: r.message(w, field: f, "t", context: "t"), source: source)
            case 7: try r.appendFloats(w, field: f, "floats", into: &floats)
            case 8: try r.appendVarints(w, field: f, "ints", into: &ints)
            case 20: typeCode = try r.int32(w, field: f, "type")
            default: try r.skip(w) // g, strings, tensors, graphs, sparse tensors, doc_string
            }
        }
    }
}

public struct ONNXValueInfo: Sendable {
    public enum Dim: Sendable, Equatable {
        case value(Int64)
        case param(String)
        case unknown
    }
    public var name = ""
    public var elemType: Int32 = 0
    /// nil when the value has no shape information.
    public var shape: [Dim]?

    init(reader: ProtobufReader) throws(ONNXError) {
        var r = reader
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: name = try r.string(w, field: f, "name")
            case 2:
                var type = try r.message(w, field: f, "type", context: "type")
                while let (tf, tw) = try type.nextTag() {
                    guard tf == 1 else { try type.skip(tw); continue } // only tensor_type
                    var tt = try type.message(tw, field: tf, "tensor_type", context: "tensor_type")
                    while let (ef, ew) = try tt.nextTag() {
                        switch ef {
                        case 1: elemType = try tt.int32(ew, field: ef, "elem_type")
                        case 2:
                            var shapeR = try tt.message(ew, field: ef, "shape", context: "shape")
                            var dims: [Dim] = []
                            while let (sf, sw) = try shapeR.nextTag() {
                                guard sf == 1 else { try shapeR.skip(sw); continue }
                                var d = try shapeR.message(sw, field: sf, "dim", context: "dim[\(dims.count)]")
                                var dim = Dim.unknown
                                while let (df, dw) = try d.nextTag() {
                                    switch df {
                                    case 1: dim = .value(try d.int64(dw, field: df, "dim_value"))
                                    case 2: dim = .param(try d.string(dw, field: df, "dim_param"))
                                    default: try d.skip(dw)
                                    }
                                }
                                dims.append(dim)
                            }
                            shape = dims
                        default: try tt.skip(ew)
                        }
                    }
                }
            default: try r.skip(w)
            }
        }
    }
}

/// A TensorProto. Data lives in exactly one of `raw_data` (little-endian bytes, kept as a range of
/// the source), `float_data`, `int32_data`, `int64_data` or `double_data`.
public struct ONNXTensor: @unchecked Sendable {
    /// TensorProto.DataType values.
    public enum DataType: Int32, Sendable {
        case undefined = 0, float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7
        case string = 8, bool = 9, float16 = 10, double = 11, uint32 = 12, uint64 = 13
        case complex64 = 14, complex128 = 15, bfloat16 = 16

        /// Bytes per element in raw_data (nil for strings).
        public var size: Int? {
            switch self {
            case .float, .int32, .uint32: return 4
            case .int64, .uint64, .double, .complex64: return 8
            case .complex128: return 16
            case .uint8, .int8, .bool: return 1
            case .uint16, .int16, .float16, .bfloat16: return 2
            case .string, .undefined: return nil
            }
        }
    }

    public var name = ""
    public var dims: [Int] = []
    public var dataTypeCode: Int32 = 0
    public var floatData: [Float] = []
    public var int32Data: [Int64] = []
    public var int64Data: [Int64] = []
    public var doubleData: [Double] = []
    /// Absolute byte range of raw_data in the source, nil when absent.
    public var rawRange: Range<Int>?
    public var isExternal = false
    let source: ONNXBytes?
    /// Path in the file, for errors.
    public let context: String

    public var dataType: DataType? { DataType(rawValue: dataTypeCode) }
    public var elementCount: Int { dims.reduce(1, *) }

    /// The raw_data bytes (valid while the model is alive).
    public var rawData: UnsafeRawBufferPointer? {
        guard let rawRange, let source else { return nil }
        return UnsafeRawBufferPointer(rebasing: source.bytes[rawRange])
    }

    init(reader: ProtobufReader, source: ONNXBytes) throws(ONNXError) {
        var r = reader
        self.source = source
        context = reader.context
        var dims64: [Int64] = []
        while let (f, w) = try r.nextTag() {
            switch f {
            case 1: try r.appendVarints(w, field: f, "dims", into: &dims64)
            case 2: dataTypeCode = try r.int32(w, field: f, "data_type")
            case 4: try r.appendFloats(w, field: f, "float_data", into: &floatData)
            case 5: try r.appendVarints(w, field: f, "int32_data", into: &int32Data)
            case 7: try r.appendVarints(w, field: f, "int64_data", into: &int64Data)
            case 8: name = try r.string(w, field: f, "name")
            case 9:
                try r.expect(w, .lengthDelimited, field: f, "raw_data")
                rawRange = try r.readLengthDelimited()
            case 10: try r.appendDoubles(w, field: f, "double_data", into: &doubleData)
            case 14: isExternal = try r.int32(w, field: f, "data_location") == 1
            default: try r.skip(w)
            }
        }
        if let bad = dims64.first(where: { $0 < 0 || $0 > Int64(Int32.max) }) {
            throw ONNXError(.badTensor, context: context, "tensor '\(name)' has dimension \(bad)")
        }
        dims = dims64.map { Int($0) }
        var total = 1
        for d in dims {
            let (p, o) = total.multipliedReportingOverflow(by: d)
            if o || p > Int(Int32.max) * 16 { throw ONNXError(.badTensor, context: context, "tensor '\(name)' dims \(dims) are too large") }
            total = p
        }
        if let rawRange, let size = dataType?.size, rawRange.count != total * size {
            throw ONNXError(.badTensor, context: context,
                            "tensor '\(name)': raw_data has \(rawRange.count) bytes, dims \(dims) x \(size) bytes need \(total * size)")
        }
    }

    /// The values converted to Float (float32, float16, bfloat16, double and integer types).
    public func floats() throws(ONNXError) -> [Float] {
        if isExternal {
            throw ONNXError(.unsupported, context: context, "tensor '\(name)' keeps its data in an external file")
        }
        guard let type = dataType, let size = type.size, type != .complex64, type != .complex128 else {
            throw ONNXError(.unsupported, context: context, "tensor '\(name)' has data_type \(dataTypeCode), not a real number type")
        }
        let n = elementCount
        if let raw = rawData {
            precondition(raw.count == n * size) // checked at parse time
            var out = [Float](repeating: 0, count: n)
            switch type {
            case .float:
                out.withUnsafeMutableBytes { $0.copyMemory(from: raw) }
            case .double: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .int64: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            case .uint64: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
            case .int32: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
            case .uint32: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
            case .int16: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
            case .uint16: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .int8: for i in 0..<n { out[i] = Float(Int8(bitPattern: raw[i])) }
            case .uint8, .bool: for i in 0..<n { out[i] = Float(raw[i]) }
            case .float16: for i in 0..<n { out[i] = Float(halfBits: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .bfloat16: for i in 0..<n { out[i] = Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            default: break
            }
            return out
        }
        let typed: [Float]
        switch type {
        case .float: typed = floatData
        case .double: typed = doubleData.map { Float($0) }
        case .int64: typed = int64Data.map { Float($0) }
        case .float16: typed = int32Data.map { Float(halfBits: UInt16(truncatingIfNeeded: $0)) }
        case .bfloat16: typed = int32Data.map { Float(bitPattern: UInt32(UInt16(truncatingIfNeeded: $0)) << 16) }
        default: typed = int32Data.map { Float($0) }
        }
        guard typed.count == n else {
            throw ONNXError(.badTensor, context: context, "tensor '\(name)': dims \(dims) need \(n) values, the typed data field holds \(typed.count)")
        }
        return typed
    }

    /// Integer values (int64, int32 and smaller integer types), e.g. shapes and axes.
    public func int64s() throws(ONNXError) -> [Int64] {
        guard let type = dataType, [.int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .uint64, .bool].contains(type) else {
            throw ONNXError(.unsupported, context: context, "tensor '\(name)' has data_type \(dataTypeCode), not an integer type")
        }
        let n = elementCount
        if let raw = rawData {
            let size = type.size!
            return (0..<n).map { i -> Int64 in
                switch type {
                case .int64: return raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
                case .uint64: return Int64(bitPattern: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                case .int32: return Int64(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
                case .uint32: return Int64(raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                case .int16: return Int64(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
                case .uint16: return Int64(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                case .int8: return Int64(Int8(bitPattern: raw[i * size]))
                default: return Int64(raw[i * size])
                }
            }
        }
        let typed = type == .int64 || type == .uint64 ? int64Data : int32Data
        guard typed.count == n else {
            throw ONNXError(.badTensor, context: context, "tensor '\(name)': dims \(dims) need \(n) values, the typed data field holds \(typed.count)")
        }
        return typed
    }
}

extension Float {
    /// IEEE half bits to Float (exact).
    init(halfBits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1f), mant = UInt32(h & 0x3ff)
        if exp == 0 {
            let v = Float(mant) * Float(sign: .plus, exponent: -24, significand: 1)
            self = sign != 0 ? -v : v
        } else if exp == 31 {
            self = Float(bitPattern: sign | 0x7f80_0000 | (mant << 13))
        } else {
            self = Float(bitPattern: sign | (UInt32(exp + 112) << 23) | (mant << 13))
        }
    }
}
