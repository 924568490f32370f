use headcode::model::{load, LoadOptions, ModelSpec};
fn main() -> anyhow::Result<()> {
    let spec = ModelSpec::resolve("smollm2-135m")?;
    let t0 = std::time::Instant::now();
    let (m, tok) = load(&spec, &LoadOptions::default())?;
    println!("loaded in {:?}: {:?}", t0.elapsed(), m.cfg);
    for p in ["The capital of France is", "One, two, three, four,"] {
        let mut ids = tok.encode(p)?;
        println!("{p:?} -> {ids:?}");
        for _ in 0..5 {
            let lg = m.last_logits(&[ids.clone()], 1)?;
            let (am, _) =
                lg[0]
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
            ids.push(am as u32);
        }
        println!("  => {:?}", tok.decode(&ids)?);
    }
    Ok(())
}
