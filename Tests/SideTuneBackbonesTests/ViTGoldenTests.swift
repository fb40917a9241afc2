import Foundation
import Testing
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneFormats

let vitGoldens = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Goldens/vit_s14_goldens.safetensors").path

/// Prints label, maxdiff and the first values as llm.c's check_tensor does; returns maxdiff.
/// Printed to stderr: CLITests capture stdout while tests run in parallel.
@discardableResult
func checkTensor(_ label: String, ours: [Float], golden: [Float], tolerance: Float) -> Float {
    precondition(ours.count == golden.count, "\(label): \(ours.count) vs \(golden.count) values")
    let maxdiff = zip(ours, golden).map { abs($0 - $1) }.max() ?? 0
    let firsts = (0..<min(4, ours.count)).map { String(format: "%.5f/%.5f", ours[$0], golden[$0]) }.joined(separator: " ")
    let line = String(format: "%-10@ maxdiff %.2e %@  first (ours/golden): %@\n", label as NSString, maxdiff,
                      maxdiff <= tolerance ? "OK " : "BAD", firsts)
    FileHandle.standardError.write(Data(line.utf8))
    return maxdiff
}

@Suite struct ViTGoldenTests {
    /// Swift preprocessing of the two raw images equals the script's torch preprocessing.
    @Test func preprocessingMatchesTorch() throws {
        let g = try SafetensorsFile(path: vitGoldens)
        let raw = try g.floats("pixels_u8").map { UInt8($0) }
        let set = ImageSet(pixels: raw, labels: [0, 0], height: 28, width: 28)
        let img = ImagePreprocessor().image(set, 0)
        #expect(img.channels == 3 && img.height == 224)
        let c0 = Array(img.values[0..<(224 * 224)])
        let d = checkTensor("input.c0", ours: c0, golden: try g.floats("input_c0_img0"), tolerance: 1e-5)
        #expect(d <= 1e-5)
    }

    /// Every tap and the final output against onnxruntime on the same ONNX file.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func tapsMatchOnnxRuntime() throws {
        let g = try SafetensorsFile(path: vitGoldens)
        let (vit, _) = try DINOv2ViT.load(onnx: ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!))
        let raw = try g.floats("pixels_u8").map { UInt8($0) }
        let set = ImageSet(pixels: raw, labels: [0, 0], height: 28, width: 28)
        let x = ImagePreprocessor().batch(set, [0, 1])
        let out = noGrad { vit(x) }
        let keep = try g.floats("token_index").map { Int($0) }
        func select(_ t: Tensor) -> [Float] {   // [2, 257, 384] -> [2, 9, 384]
            var v: [Float] = []
            for b in 0..<2 { for k in keep { v += Array(UnsafeBufferPointer(start: t.data + (b * 257 + k) * 384, count: 384)) } }
            return v
        }
        #expect(out.taps.count == 13)
        var worst: Float = 0
        for (i, tap) in out.taps.enumerated() {
            #expect(tap.shape == [2, 257, 384])
            let d = checkTensor("tap.\(i)", ours: select(tap), golden: try g.floats("tap.\(i)"), tolerance: 1e-3)
            #expect(d <= 1e-3, "tap \(i)")
            worst = max(worst, d)
        }
        let dSel = checkTensor("final.sel", ours: select(out.hidden), golden: try g.floats("final.sel"), tolerance: 1e-3)
        let dFull = checkTensor("final.img0", ours: Array(UnsafeBufferPointer(start: out.hidden.data, count: 257 * 384)),
                                golden: try g.floats("final.img0"), tolerance: 1e-3)
        #expect(dSel <= 1e-3 && dFull <= 1e-3)

        // A non-square size (42 x 56 -> 3 x 4 patches): the position grid is resized 37 -> 3 and 37 -> 4.
        let odd = Tensor(try g.floats("odd.input"), shape: [1, 3, 42, 56])
        let o = noGrad { vit(odd) }
        #expect(o.grid == (3, 4) && o.hidden.shape == [1, 13, 384])
        for (label, ours) in [("odd.tap.0", o.taps[0]), ("odd.tap.12", o.taps[12]), ("odd.final", o.hidden)] {
            let d = checkTensor(label, ours: ours.toArray(), golden: try g.floats(label), tolerance: 1e-3)
            #expect(d <= 1e-3, "\(label)")
        }
        FileHandle.standardError.write(Data("worst tap maxdiff \(worst)\n".utf8))
    }

    /// `--backbone-precision bf16`: every tap within a bf16 tolerance of onnxruntime's f32 outputs
    /// (relative error ||ours - golden|| / ||golden||; bound 2%, the measured values are printed).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func tapsWithBFloat16Products() throws {
        let g = try SafetensorsFile(path: vitGoldens)
        let (vit, _) = try DINOv2ViT.load(onnx: ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!))
        vit.freeze()
        vit.convertProjectionsToBFloat16()
        #expect(vit.storesBFloat16Projections)
        let raw = try g.floats("pixels_u8").map { UInt8($0) }
        let x = ImagePreprocessor().batch(ImageSet(pixels: raw, labels: [0, 0], height: 28, width: 28), [0, 1])
        let out = Tensor.withMatmulPrecision(.bfloat16) { noGrad { vit(x) } }
        let keep = try g.floats("token_index").map { Int($0) }
        for (i, tap) in out.taps.enumerated() {
            var v: [Float] = []
            for b in 0..<2 { for k in keep { v += Array(UnsafeBufferPointer(start: tap.data + (b * 257 + k) * 384, count: 384)) } }
            let err = relativeError(v, try g.floats("tap.\(i)"))
            FileHandle.standardError.write(Data(String(format: "bf16 tap.%d relative error %.2e\n", i, err).utf8))
            #expect(err <= 0.02, "tap \(i): \(err)")
            if i > 0 { #expect(err > 0, "tap \(i) equals f32: the bf16 path did not run") }
        }
    }
}
