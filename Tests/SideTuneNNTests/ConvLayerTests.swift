import Foundation
import SideTuneEngine
import SideTuneNN
import Testing

final class ConvNet: Module {
    let conv: Conv2d
    let norm = BatchNorm(4)
    let head = BatchNorm(4, affine: false)
    init(rng: inout SplitMix64) { conv = Conv2d(3, 4, kernel: 3, stride: 2, padding: 1, bias: false, rng: &rng) }
}

@Suite struct ConvLayerTests {
    @Test func runningStatisticsAreBuffersNotParameters() {
        var rng = SplitMix64(seed: 1)
        let net = ConvNet(rng: &rng)
        #expect(net.namedParameters().map(\.0) == ["conv.weight", "norm.weight", "norm.bias"])
        #expect(net.namedBuffers().map(\.0) == ["norm.runningMean", "norm.runningVar", "head.runningMean", "head.runningVar"])
        #expect(net.trainableParameterCount == 4 * 3 * 9 + 8)
        #expect(net.namedBuffers().allSatisfy { !$0.1.requiresGrad })
    }

    @Test func batchNormModeFollowsTrain() {
        var rng = SplitMix64(seed: 2)
        let bn = BatchNorm(2)
        let x = Tensor.randn([8, 2, 3, 3], std: 3, rng: &rng) + 5
        let trained = noGrad { bn(x) }
        // Training mode normalises with the batch: mean ~0. Statistics moved 10% toward the batch.
        #expect(abs(trained.mean().item()) < 1e-4)
        let rm = bn.runningMean.value.toArray()
        #expect(rm.allSatisfy { $0 > 0.3 && $0 < 0.7 })
        bn.train(false)
        let evaluated = noGrad { bn(x) }
        // Evaluation uses the running statistics (mean ~0.5, var ~1.8): the output stays far from 0 mean.
        #expect(evaluated.mean().item() > 2)
        #expect(bn.runningMean.value.toArray() == rm)
    }

    @Test func conv2dLayerShapes() {
        var rng = SplitMix64(seed: 3)
        let conv = Conv2d(3, 8, kernel: 2, stride: 2, rng: &rng)
        #expect(conv(Tensor.zeros([2, 3, 8, 6])).shape == [2, 8, 4, 3])
        #expect(conv.weight.shape == [8, 3, 2, 2] && conv.bias?.shape == [8])
    }
}
