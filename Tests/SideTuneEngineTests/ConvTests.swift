import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// conv2d, batchNorm and bilinear resize: fast paths against references, gradients against
/// finite differences, and values against PyTorch where a formula could be misread.
@Suite struct ConvOpTests {
    /// (input shape, weight shape, stride, padding), covering HST's stem (3x3 s2 p1, no bias; 2x2 s2),
    /// non-square inputs, stride 1 and a kernel that does not tile the input.
    static let geometries: [([Int], [Int], (Int, Int), (Int, Int))] = [
        ([2, 3, 9, 7], [4, 3, 3, 3], (2, 2), (1, 1)),
        ([2, 4, 8, 6], [5, 4, 2, 2], (2, 2), (0, 0)),
        ([1, 2, 5, 5], [3, 2, 3, 3], (1, 1), (1, 1)),
        ([3, 2, 7, 10], [2, 2, 3, 2], (2, 3), (0, 1)),
    ]

    @Test func im2colGEMMAgreesWithTheDirectLoops() {
        for (i, (xs, ws, s, p)) in Self.geometries.enumerated() {
            let x = randomTensor(xs, seed: UInt64(10 + i)), w = randomTensor(ws, seed: UInt64(20 + i))
            let b = randomTensor([ws[0]], seed: UInt64(30 + i))
            for bias in [b, nil] {
                let fast = noGrad { Tensor.conv2d(x, weight: w, bias: bias, stride: s, padding: p) }
                let ref = conv2dReference(x, weight: w, bias: bias, stride: s, padding: p)
                #expect(fast.shape == ref.shape)
                #expect(maxAbsDiff(fast, ref) < 1e-4, "geometry \(i) bias \(bias != nil)")
            }
        }
        // Output size formula: (H + 2p - k) / s + 1, as PyTorch.
        let y = noGrad { Tensor.conv2d(Tensor.zeros([1, 3, 224, 224]), weight: Tensor.zeros([8, 3, 3, 3]), stride: 2, padding: 1) }
        #expect(y.shape == [1, 8, 112, 112])
    }

    @Test func conv2dGradients() {
        for (i, (xs, ws, s, p)) in Self.geometries.enumerated() {
            let x = randomTensor(xs, seed: UInt64(40 + i)), w = randomTensor(ws, seed: UInt64(50 + i), scale: 0.5)
            let b = randomTensor([ws[0]], seed: UInt64(60 + i))
            gradCheck("conv2d \(i)", [x, w, b]) { Tensor.conv2d($0[0], weight: $0[1], bias: $0[2], stride: s, padding: p) }
            gradCheck("conv2d \(i) no bias", [x, w]) { Tensor.conv2d($0[0], weight: $0[1], bias: nil, stride: s, padding: p) }
        }
    }

    @Test func conv2dOnlyComputesTheGradientsAsked() {
        let x = randomTensor([2, 3, 6, 6], seed: 1), w = randomTensor([4, 3, 3, 3], seed: 2)
        w.requiresGrad = true
        Tensor.conv2d(x, weight: w, stride: 2, padding: 1).sum().backward()
        #expect(x.grad == nil && w.grad != nil)
    }

    @Test func batchNormTrainingNormalisesAndUpdatesRunningStatistics() {
        let x = randomTensor([4, 3, 2, 5], seed: 3, scale: 2) + 1
        let rm = Tensor.zeros([3]), rv = Tensor.ones([3])
        let y = noGrad { Tensor.batchNorm(x, runningMean: rm, runningVar: rv, weight: nil, bias: nil, training: true, eps: 0) }
        for c in 0..<3 {
            var vals: [Double] = []
            for b in 0..<4 { for i in 0..<10 { vals.append(Double(x.data[(b * 3 + c) * 10 + i])) } }
            let mean = vals.reduce(0, +) / 40
            let biased = vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 40
            var ys: [Double] = []
            for b in 0..<4 { for i in 0..<10 { ys.append(Double(y.data[(b * 3 + c) * 10 + i])) } }
            #expect(abs(ys.reduce(0, +) / 40) < 1e-5)
            #expect(abs(ys.map { $0 * $0 }.reduce(0, +) / 40 - 1) < 1e-4)
            // PyTorch: momentum 0.1, the running variance takes the unbiased estimate.
            #expect(abs(Double(rm.data[c]) - 0.1 * mean) < 1e-5)
            #expect(abs(Double(rv.data[c]) - (0.9 + 0.1 * biased * 40 / 39)) < 1e-4)
        }
    }

    @Test func batchNormEvaluationUsesRunningStatistics() {
        let x = randomTensor([3, 2], seed: 4)
        let rm = Tensor([0.5, -1], shape: [2]), rv = Tensor([4, 0.25], shape: [2])
        let w = Tensor([2, 3], shape: [2]), b = Tensor([0.1, 0.2], shape: [2])
        let y = noGrad { Tensor.batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: false, eps: 0) }
        for n in 0..<3 {
            #expect(abs(y[n, 0] - ((x[n, 0] - 0.5) / 2 * 2 + 0.1)) < 1e-5)
            #expect(abs(y[n, 1] - ((x[n, 1] + 1) / 0.5 * 3 + 0.2)) < 1e-5)
        }
        #expect(rm.toArray() == [0.5, -1] && rv.toArray() == [4, 0.25]) // untouched
    }

    @Test func batchNormGradients() {
        let x4 = randomTensor([3, 2, 3, 2], seed: 5), x2 = randomTensor([5, 4], seed: 6)
        let w2 = randomTensor([2], seed: 7) + 1, b2 = randomTensor([2], seed: 8)
        let w4 = randomTensor([4], seed: 9) + 1, b4 = randomTensor([4], seed: 10)
        for training in [true, false] {
            let rm2 = randomTensor([2], seed: 11), rv2 = randomTensor([2], seed: 12).square() + 0.5
            let rm4 = randomTensor([4], seed: 13), rv4 = randomTensor([4], seed: 14).square() + 0.5
            gradCheck("batchNorm2d train=\(training)", [x4, w2, b2]) {
                Tensor.batchNorm($0[0], runningMean: rm2, runningVar: rv2, weight: $0[1], bias: $0[2], training: training)
            }
            gradCheck("batchNorm1d train=\(training)", [x2, w4, b4]) {
                Tensor.batchNorm($0[0], runningMean: rm4, runningVar: rv4, weight: $0[1], bias: $0[2], training: training)
            }
            gradCheck("batchNorm1d no affine train=\(training)", [x2]) {
                Tensor.batchNorm($0[0], runningMean: rm4, runningVar: rv4, weight: nil, bias: nil, training: training, eps: 1e-6)
            }
        }
    }

    @Test func bilinearResizeMatchesPyTorch() {
        // x = 0.1 * k^2 for k = 0..<12 as [1, 1, 3, 4]; F.interpolate(..., mode="bilinear", align_corners=False).
        let x = Tensor((0..<12).map { Float($0 * $0) * 0.1 }, shape: [1, 1, 3, 4])
        let expected: [(Int, Int, [Float])] = [
            (5, 3, [0.016667, 0.25, 0.816667, 0.71, 1.37, 2.363334, 1.75, 3.05, 4.683333, 4.710001, 6.650001, 8.923335,
                    6.683334, 9.05, 11.75]),
            (2, 2, [0.55, 1.55, 5.95, 9.35]),
            (6, 8, [0.0, 0.025, 0.075, 0.175, 0.325, 0.525, 0.775, 0.9, 0.4, 0.475, 0.625, 0.825, 1.075, 1.375, 1.725, 1.9,
                    1.2, 1.375, 1.725, 2.125, 2.575, 3.075, 3.625, 3.9, 2.8, 3.075, 3.625, 4.225, 4.875, 5.575, 6.325, 6.7,
                    5.2, 5.575, 6.325, 7.125, 7.975, 8.875, 9.825001, 10.3, 6.4, 6.825, 7.675, 8.575001, 9.525, 10.525001,
                    11.575, 12.100001]),
        ]
        for (h, w, values) in expected {
            let y = noGrad { x.resizedBilinear(height: h, width: w) }
            #expect(y.shape == [1, 1, h, w])
            #expect(maxAbsDiff(y, Tensor(values, shape: [1, 1, h, w])) < 1e-5, "\(h)x\(w)")
        }
    }

    @Test func bilinearResizeGradients() {
        let x = randomTensor([2, 3, 4, 5], seed: 15)
        gradCheck("resize up", [x]) { $0[0].resizedBilinear(height: 7, width: 9) }
        gradCheck("resize down", [x]) { $0[0].resizedBilinear(height: 3, width: 2) }
        gradCheck("resize mixed", [x]) { $0[0].resizedBilinear(height: 2, width: 11) }
    }
}
