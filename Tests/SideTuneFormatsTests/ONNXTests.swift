import Foundation
import Testing
import SideTuneFormats

/// A tiny protobuf encoder for hand-built test buffers.
enum PB {
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        repeat {
            var b = UInt8(v & 0x7f)
            v >>= 7
            if v != 0 { b |= 0x80 }
            out.append(b)
        } while v != 0
        return out
    }
    static func tag(_ field: Int, _ wire: Int) -> [UInt8] { varint(UInt64(field << 3 | wire)) }
    static func int(_ field: Int, _ v: Int64) -> [UInt8] { tag(field, 0) + varint(UInt64(bitPattern: v)) }
    static func bytes(_ field: Int, _ b: [UInt8]) -> [UInt8] { tag(field, 2) + varint(UInt64(b.count)) + b }
    static func string(_ field: Int, _ s: String) -> [UInt8] { bytes(field, Array(s.utf8)) }
    static func float(_ field: Int, _ f: Float) -> [UInt8] { tag(field, 5) + le(f.bitPattern) }
    static func double(_ field: Int, _ d: Double) -> [UInt8] { tag(field, 1) + le(d.bitPattern) }
    static func packedFloats(_ field: Int, _ fs: [Float]) -> [UInt8] { bytes(field, fs.flatMap { le($0.bitPattern) }) }
    static func packedInts(_ field: Int, _ vs: [Int64]) -> [UInt8] { bytes(field, vs.flatMap { varint(UInt64(bitPattern: $0)) }) }
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    static func tensor(name: String, dims: [Int64], type: Int64 = 1, raw: [UInt8]? = nil, floats: [Float]? = nil,
                       int64s: [Int64]? = nil, packedDims: Bool = false) -> [UInt8] {
        var b = packedDims ? packedInts(1, dims) : dims.flatMap { int(1, $0) }
        b += int(2, type)
        if let floats { b += packedFloats(4, floats) }
        if let int64s { b += packedInts(7, int64s) }
        b += string(8, name)
        if let raw { b += bytes(9, raw) }
        return b
    }
    static func model(graph: [UInt8], ir: Int64 = 7, opset: Int64 = 14) -> [UInt8] {
        int(1, ir) + bytes(8, string(1, "") + int(2, opset)) + bytes(7, graph)
    }
}

func expectONNXError(_ kind: ONNXError.Kind, contains: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected ONNXError.\(kind), got success", sourceLocation: sourceLocation)
    } catch let e as ONNXError {
        #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation)
        for s in contains { #expect(e.description.contains(s), "'\(s)' not in: \(e)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected ONNXError.\(kind), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct ProtobufWireTests {
    func reader(_ b: [UInt8], _ body: (inout ProtobufReader) throws -> Void) rethrows {
        try b.withUnsafeBytes { raw in
            var r = ProtobufReader(bytes: raw, context: "Test")
            try body(&r)
        }
    }

    @Test func varints() throws {
        for v: UInt64 in [0, 1, 127, 128, 300, 16_384, UInt64(UInt32.max), UInt64.max] {
            try reader(PB.varint(v)) { (r: inout ProtobufReader) throws in
                #expect(try r.readVarint() == v)
                #expect(r.isAtEnd)
            }
        }
        #expect(PB.varint(300) == [0xAC, 0x02]) // the protobuf docs' example
        // Negative int64 is ten bytes on the wire.
        try reader(PB.int(3, -2)) { (r: inout ProtobufReader) throws in
            let (f, w) = try #require(try r.nextTag())
            #expect(f == 3 && w == .varint)
            #expect(try r.int64(w, field: f, "i") == -2)
        }
    }

    @Test func fixedAndLengthDelimited() throws {
        let b = PB.float(2, 1.5) + PB.double(10, -0.25) + PB.string(1, "héllo") + PB.tag(9, 5) + PB.le(UInt32(7))
        try reader(b) { (r: inout ProtobufReader) throws in
            var (f, w) = try #require(try r.nextTag())
            #expect(try r.float(w, field: f, "f") == 1.5)
            (f, w) = try #require(try r.nextTag())
            #expect(try r.double(w, field: f, "d") == -0.25)
            (f, w) = try #require(try r.nextTag())
            #expect(try r.string(w, field: f, "s") == "héllo")
            (f, w) = try #require(try r.nextTag())
            #expect(f == 9 && w == .fixed32)
            #expect(try r.readFixed32() == 7)
            #expect(try r.nextTag() == nil)
        }
    }

    @Test func packedAndUnpackedRepeated() throws {
        var ints: [Int64] = [], floats: [Float] = []
        try reader(PB.packedInts(8, [1, -1, 300]) + PB.int(8, 5) + PB.packedFloats(7, [0.5, 2]) + PB.float(7, 3)) { (r: inout ProtobufReader) throws in
            while let (f, w) = try r.nextTag() {
                if f == 8 { try r.appendVarints(w, field: f, "ints", into: &ints) } else { try r.appendFloats(w, field: f, "floats", into: &floats) }
            }
        }
        #expect(ints == [1, -1, 300, 5])
        #expect(floats == [0.5, 2, 3])
    }

    @Test func truncatedVarint() {
        expectONNXError(.truncated, contains: ["varint", "Test"]) {
            try reader([0x80, 0x80]) { (r: inout ProtobufReader) throws in _ = try r.readVarint() }
        }
    }

    @Test func overlongVarint() {
        expectONNXError(.malformedVarint) {
            try reader([UInt8](repeating: 0xff, count: 11) + [0]) { (r: inout ProtobufReader) throws in _ = try r.readVarint() }
        }
    }

    @Test func lengthPastEnd() {
        expectONNXError(.truncated, contains: ["100 bytes", "only 2 left"]) {
            try reader(PB.tag(1, 2) + PB.varint(100) + [1, 2]) { (r: inout ProtobufReader) throws in
                let (f, w) = try #require(try r.nextTag())
                _ = try r.string(w, field: f, "name")
            }
        }
    }

    @Test func truncatedFixed() {
        expectONNXError(.truncated, contains: ["fixed32"]) {
            try reader(PB.tag(2, 5) + [1, 2]) { (r: inout ProtobufReader) throws in
                let (f, w) = try #require(try r.nextTag())
                _ = try r.float(w, field: f, "f")
            }
        }
        expectONNXError(.truncated, contains: ["fixed64"]) {
            try reader(PB.tag(10, 1) + [1, 2, 3]) { (r: inout ProtobufReader) throws in
                let (f, w) = try #require(try r.nextTag())
                _ = try r.double(w, field: f, "d")
            }
        }
    }

    @Test func badWireTypesAndFieldZero() {
        expectONNXError(.malformedTag, contains: ["wire type 7"]) { try reader([0x0f]) { (r: inout ProtobufReader) throws in _ = try r.nextTag() } }
        expectONNXError(.malformedTag, contains: ["field number 0"]) { try reader([0x00]) { (r: inout ProtobufReader) throws in _ = try r.nextTag() } }
        expectONNXError(.unsupported, contains: ["groups"]) {
            try reader(PB.tag(5, 3)) { (r: inout ProtobufReader) throws in
                let (_, w) = try #require(try r.nextTag())
                try r.skip(w)
            }
        }
        expectONNXError(.wrongWireType, contains: ["name", "wire type 0, expected 2"]) {
            try reader(PB.int(1, 3)) { (r: inout ProtobufReader) throws in
                let (f, w) = try #require(try r.nextTag())
                _ = try r.string(w, field: f, "name")
            }
        }
    }
}

@Suite struct ONNXModelTests {
    /// A two-node graph with initializers in every storage form and every attribute kind we read.
    func sampleGraph() -> [UInt8] {
        let w = PB.tensor(name: "W", dims: [2, 3], raw: [Float](arrayLiteral: 1, 2, 3, 4, 5, 6).flatMap { PB.le($0.bitPattern) })
        let b = PB.tensor(name: "B", dims: [3], floats: [0.5, -0.5, 1], packedDims: true)
        let shape = PB.tensor(name: "S", dims: [2], type: 7, int64s: [-1, 3])
        let attrs = PB.bytes(5, PB.string(1, "alpha") + PB.int(20, 1) + PB.float(2, 0.75))
            + PB.bytes(5, PB.string(1, "axis") + PB.int(20, 2) + PB.int(3, -1))
            + PB.bytes(5, PB.string(1, "mode") + PB.int(20, 3) + PB.bytes(4, Array("cubic".utf8)))
            + PB.bytes(5, PB.string(1, "perm") + PB.int(20, 7) + PB.packedInts(8, [0, 2, 1]))
            + PB.bytes(5, PB.string(1, "scales") + PB.int(20, 6) + PB.packedFloats(7, [1, 2]))
            + PB.bytes(5, PB.string(1, "value") + PB.int(20, 4) + PB.bytes(5, PB.tensor(name: "", dims: [1], floats: [9])))
        let n1 = PB.string(1, "x") + PB.string(1, "W") + PB.string(2, "y") + PB.string(3, "mm") + PB.string(4, "MatMul")
        let n2 = PB.string(1, "y") + PB.string(1, "B") + PB.string(2, "z") + PB.string(3, "add") + PB.string(4, "Add") + attrs
        let dim = { (d: [UInt8]) in PB.bytes(1, d) }
        let typeX = PB.bytes(1, PB.int(1, 1) + PB.bytes(2, dim(PB.string(2, "batch")) + dim(PB.int(1, 2))))
        let input = PB.string(1, "x") + PB.bytes(2, typeX)
        return PB.bytes(1, n1) + PB.bytes(1, n2) + PB.string(2, "g") + PB.bytes(5, w) + PB.bytes(5, b) + PB.bytes(5, shape)
            + PB.bytes(11, input) + PB.bytes(12, PB.string(1, "z")) + PB.string(10, "doc is skipped")
    }

    @Test func parsesEveryFieldWeRead() throws {
        let m = try ONNXModel(bytes: PB.model(graph: sampleGraph()))
        #expect(m.irVersion == 7)
        #expect(m.opsets.count == 1 && m.opsets[0].domain == "" && m.opsets[0].version == 14)
        let g = m.graph
        #expect(g.name == "g")
        #expect(g.nodes.map(\.opType) == ["MatMul", "Add"])
        #expect(g.nodes[0].inputs == ["x", "W"] && g.nodes[0].outputs == ["y"] && g.nodes[0].name == "mm")
        let a = g.nodes[1]
        #expect(a.attribute("alpha")?.kind == .float && a.attribute("alpha")?.f == 0.75)
        #expect(a.attribute("axis")?.kind == .int && a.attribute("axis")?.i == -1)
        #expect(a.attribute("mode")?.string == "cubic")
        #expect(a.attribute("perm")?.ints == [0, 2, 1])
        #expect(a.attribute("scales")?.floats == [1, 2])
        #expect(try a.attribute("value")?.t?.floats() == [9])
        #expect(g.initializers.map(\.name) == ["W", "B", "S"])
        #expect(g.initializers[0].dims == [2, 3] && g.initializers[0].dataType == .float)
        #expect(try g.initializers[0].floats() == [1, 2, 3, 4, 5, 6])
        #expect(try g.initializers[1].floats() == [0.5, -0.5, 1])
        #expect(try g.initializers[2].int64s() == [-1, 3])
        #expect(g.inputs.first?.name == "x" && g.inputs.first?.shape == [.param("batch"), .value(2)])
        #expect(g.outputs.map(\.name) == ["z"])
    }

    @Test func everyTruncationIsAnErrorNotACrash() throws {
        let full = PB.model(graph: sampleGraph())
        var errors = 0
        for cut in 0..<full.count {
            do { _ = try ONNXModel(bytes: Array(full[0..<cut])) } catch is ONNXError { errors += 1 }
        }
        // Cuts that end exactly between top-level fields parse (a valid, shorter message) except
        // that without the graph field the model is rejected too; every cut is an error here
        // because the graph is the last field.
        #expect(errors == full.count)
    }

    @Test func rawDataSizeMismatch() {
        let t = PB.tensor(name: "W", dims: [2, 3], raw: [UInt8](repeating: 0, count: 20))
        expectONNXError(.badTensor, contains: ["'W'", "20 bytes", "need 24"]) {
            _ = try ONNXModel(bytes: PB.model(graph: PB.bytes(5, t)))
        }
    }

    @Test func typedDataCountMismatch() throws {
        let m = try ONNXModel(bytes: PB.model(graph: PB.bytes(5, PB.tensor(name: "B", dims: [4], floats: [1, 2]))))
        expectONNXError(.badTensor, contains: ["need 4 values", "holds 2"]) { _ = try m.graph.initializers[0].floats() }
    }

    @Test func negativeDimension() {
        expectONNXError(.badTensor, contains: ["dimension -3"]) {
            _ = try ONNXModel(bytes: PB.model(graph: PB.bytes(5, PB.tensor(name: "B", dims: [-3], floats: []))))
        }
    }

    @Test func externalDataIsUnsupported() throws {
        let t = PB.tensor(name: "E", dims: [1]) + PB.int(14, 1)
        let m = try ONNXModel(bytes: PB.model(graph: PB.bytes(5, t)))
        expectONNXError(.unsupported, contains: ["external"]) { _ = try m.graph.initializers[0].floats() }
    }

    @Test func missingGraph() {
        expectONNXError(.badGraph, contains: ["no graph"]) { _ = try ONNXModel(bytes: PB.int(1, 7)) }
    }

    @Test func errorNamesTheNestedMessage() {
        // node[1].attribute[0] with a name encoded as a varint.
        let bad = PB.bytes(1, PB.string(4, "Relu")) + PB.bytes(1, PB.string(4, "Add") + PB.bytes(5, PB.int(1, 3)))
        expectONNXError(.wrongWireType, contains: ["ModelProto.graph.node[1].attribute[0]", "name"]) {
            _ = try ONNXModel(bytes: PB.model(graph: bad))
        }
    }

    @Test func missingFile() {
        expectONNXError(.io) { _ = try ONNXModel(path: "/nonexistent/model.onnx") }
    }

    /// The real DINOv2 file (set SIDETUNE_VIT_ONNX to its path).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func realViTFile() throws {
        let m = try ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!)
        let g = m.graph
        #expect(m.irVersion == 7)
        #expect(m.opsets.first?.version == 14)
        #expect(g.initializers.count == 243)
        #expect(g.nodes.count == 1485)
        #expect(g.inputs.map(\.name) == ["input_image"])
        #expect(g.inputs[0].shape == [.param("batch_size"), .value(3), .value(224), .value(224)])
        #expect(g.outputs.map(\.name) == ["output_importance"])
        let inits = g.initializerMap()
        #expect(inits["backbone.embeddings.patch_embeddings.projection.weight"]?.dims == [384, 3, 14, 14])
        #expect(inits["backbone.embeddings.cls_token"]?.dims == [1, 1, 384])
        #expect(inits["backbone.encoder.layer.11.mlp.fc1.bias"]?.dims == [1536])
        #expect(inits["onnx::Reshape_1962"]?.dims == [1, 1369, 384])
        let matmuls = g.initializers.filter { $0.name.hasPrefix("onnx::MatMul_") }
        #expect(matmuls.count == 72)
        #expect(matmuls.filter { $0.dims == [384, 1536] }.count == 12)
        let ls = try inits["backbone.encoder.layer.0.layer_scale1.lambda1"]!.floats()
        #expect(ls.count == 384 && ls.allSatisfy { $0.isFinite })
        let resize = try #require(g.nodes.first { $0.opType == "Resize" })
        #expect(resize.attribute("mode")?.string == "cubic")
        #expect(resize.attribute("cubic_coeff_a")?.f == -0.75)
    }
}
