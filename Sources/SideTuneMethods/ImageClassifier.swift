import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// An image classifier: a DINOv2 ViT plus what a method trains. As `TextClassifier`: side methods
/// (LST, LAST, linear probe) run the ViT inside `noGrad` and never backpropagate into it; full
/// fine-tuning, BitFit and LoRA backpropagate through it. Batch: pixels [B, 3, H, W],
/// ImageNet-normalised, H and W multiples of 14.
public final class ImageClassifier: Module, ClassifierModel {
    public typealias Batch = Tensor
    public let backbone: DINOv2ViT
    public let reader: any TapReader
    public let _method: MethodKind
    public let _options: MethodOptions
    public let _classes: Int

    public var method: MethodKind { _method }
    public var options: MethodOptions { _options }
    public var classes: Int { _classes }

    /// Builds the method around `backbone` (which it freezes or modifies as the method needs).
    /// LST's side blocks start random on a ViT (its pruned initialisation is BERT-only so far).
    public init(backbone: DINOv2ViT, method: MethodKind, classes: Int, options: MethodOptions, seed: UInt64) throws {
        guard classes >= 2 else { throw MethodError("a classifier needs at least 2 classes, got \(classes)") }
        var rng = SplitMix64(seed: seed)
        let c = backbone.config
        self.backbone = backbone
        _method = method
        _options = options
        _classes = classes
        backbone.freeze()
        switch method {
        case .lst:
            guard options.sideInit == .random else {
                throw MethodError("LST on the ViT: --side-init \(options.sideInit.rawValue) is not built for images yet; use --side-init random")
            }
            reader = try LSTSide(shape: .vit(c), classes: classes, options: options, rng: &rng)
        case .last:
            // Our choice on the ViT: the linear probe's head (frozen final norm, CLS + mean patches,
            // Linear). With Up = 0 the corrected stream is h_L, so LAST starts as the probe exactly.
            let head = ViTHead(norm: backbone.norm, classes: classes, dropout: 0, rng: &rng)
            reader = try LASTSide(shape: .vit(c), classes: classes, options: options, head: head, rng: &rng)
        case .linear:
            reader = ViTHead(norm: backbone.norm, classes: classes, dropout: 0, rng: &rng)
        case .full:
            backbone.unfreeze()
            reader = ViTHead(norm: backbone.norm, classes: classes, dropout: options.dropout, rng: &rng)
        case .bitfit:
            backbone.unfreezeBiases()
            reader = ViTHead(norm: backbone.norm, classes: classes, dropout: options.dropout, rng: &rng)
        case .lora:
            for block in backbone.layers {
                let a = block.attention
                a.query = LoRALinear(wrapping: a.query, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
                a.value = LoRALinear(wrapping: a.value, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
            }
            reader = ViTHead(norm: backbone.norm, classes: classes, dropout: options.dropout, rng: &rng)
        case .hst:
            throw MethodError("HST has its own model: use HSTClassifier (sidetune train --method hst does)")
        case .adapter, .prompt, .qst, .qlora:
            throw MethodError("method \(method.rawValue) is not built for the ViT yet (on the ViT: lst, last, hst, linear, full, bitfit, lora)")
        }
        super.init()
    }

    /// All of h_0...h_L for LST and LAST, the last for the probe; nothing when backprop runs through the ViT.
    public var tapsRead: [Int] {
        let l = backbone.config.layers
        switch method {
        case .linear: return [l]
        case .lst, .last: return Array(0...l)
        default: return []
        }
    }

    public var tapCount: Int { backbone.config.layers + 1 }
    public var tapWidth: Int { backbone.config.hiddenSize }
    public var readsBFloat16Taps: Bool { method.readsFrozenTaps && reader.readsBFloat16Taps }

    /// The ViT, LST's and LAST's blocks, the probe's head, LoRA and BitFit treat every image apart. (HST,
    /// a model of its own, does not claim it: its side network's BatchNorm couples them.)
    public var examplesAreIndependent: Bool { true }

    /// The ViT's taps [B, 1 + h*w, d] for a batch, without autograd (what side methods read, and cache).
    public func frozenTaps(_ pixels: Tensor) -> [Tensor] {
        noGrad { backbone(pixels).taps }
    }

    public func logits(_ pixels: Tensor, taps cached: [Tensor]?) -> Tensor {
        if method.readsFrozenTaps {
            let taps = cached ?? frozenTaps(pixels)
            return reader(taps: taps, keyPadding: Self.noPadding(taps))
        }
        // Records on the autograd tape: gradients reach the unfrozen backbone parameters.
        let taps = backbone(pixels).taps
        return reader(taps: taps, keyPadding: Self.noPadding(taps))
    }

    public func callAsFunction(_ pixels: Tensor, taps: [Tensor]? = nil) -> Tensor { logits(pixels, taps: taps) }

    /// Images have no padding: every token is real. Sized from the first tap that is not empty.
    static func noPadding(_ taps: [Tensor]) -> [Float] {
        guard let t = taps.first(where: { $0.rank == 3 }) else { return [] }
        return [Float](repeating: 1, count: t.shape[0] * t.shape[1])
    }
}

/// DINOv2's linear-probe head: the backbone's final LayerNorm on the last tap, then the CLS token
/// next to the mean of the patch tokens [B, 2d] -> dropout -> Linear. The norm is the backbone's
/// own (frozen for the probe, trained with it in full fine-tuning), held as `_norm` so it is
/// counted once, under `backbone.`.
public final class ViTHead: Module, TapReader {
    public let classifier: Linear
    public let dropout: Dropout
    let _norm: LayerNorm

    public init(norm: LayerNorm, classes: Int, dropout p: Float, rng: inout SplitMix64) {
        let d = norm.weight?.count ?? 0
        precondition(d > 0, "ViTHead needs the backbone's affine final LayerNorm")
        classifier = Linear(2 * d, classes, rng: &rng)
        dropout = Dropout(p, seed: rng.next())
        _norm = norm
        super.init()
    }

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor {
        let x = _norm(taps[taps.count - 1])                    // [B, 1 + N, d]
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let cls = x.slice(axis: 1, 0, 1).reshaped([b, d])
        let patches = x.slice(axis: 1, 1, t).mean(axes: [1])   // [B, d]
        return classifier(dropout(Tensor.concat([cls, patches], axis: 1)))
    }
}

/// A labelled image split the trainer can batch: `make` turns example indices into pixels
/// [B, 3, H, W] (decoding and preprocessing happen per batch, so only a batch of pixels is ever
/// held). `tokens` = patches + 1 (CLS), what the feature cache stores per image.
public struct ImageSplit: ClassificationData {
    public typealias Batch = Tensor
    public let count: Int
    public let labels: [Int]
    public let tokens: Int
    let make: @Sendable ([Int]) -> Tensor

    public init(labels: [Int], tokens: Int, make: @escaping @Sendable ([Int]) -> Tensor) {
        count = labels.count
        self.labels = labels
        self.tokens = tokens
        self.make = make
    }

    /// Images of side `size` cut into `patch` x `patch` patches: (size / patch)^2 + 1 tokens.
    public static func tokens(size: Int, patch: Int = 14) -> Int { (size / patch) * (size / patch) + 1 }

    public func tokenCount(_ i: Int) -> Int { tokens }
    public func batch(_ indices: [Int]) -> Tensor { make(indices) }
}
