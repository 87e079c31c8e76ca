//! Architectures that resolve, and those refused with the layer at fault named.

use super::*;

#[test]
fn classic_mnist_cnn_resolves_and_names_params_like_pytorch() {
    let a = Architecture::parse_json(
        r#"{"input_shape":[1,28,28],"input_scale":0.00392156862745098,"layers":[
            {"type":"conv2d","in_channels":1,"out_channels":32,"kernel_size":3},
            {"type":"relu"},{"type":"maxpool2d","kernel_size":2},{"type":"flatten"},
            {"type":"linear","in_features":5408,"out_features":10}]}"#,
    )
    .unwrap();
    assert_eq!(a.layers[3].output_shape, vec![5408]);
    assert_eq!(a.classes(), Some(10));
    let names: Vec<_> = a.params().into_iter().map(|p| (p.name, p.shape)).collect();
    assert_eq!(
        names,
        vec![
            ("0.weight".to_string(), vec![32, 1, 3, 3]),
            ("0.bias".to_string(), vec![32]),
            ("4.weight".to_string(), vec![10, 5408]),
            ("4.bias".to_string(), vec![10]),
        ]
    );
    let back = Architecture::parse_json(&a.to_json().to_string()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn bad_architectures_name_the_layer_at_fault() {
    for (json, needle) in [
        (
            r#"{"input_shape":[784],"layers":[{"type":"linear","in_features":700,"out_features":10}]}"#,
            "layers[0] (linear '0'): expects 700 input features but the previous layer gives 784",
        ),
        (
            r#"{"input_shape":[1,28,28],"layers":[{"type":"linear","in_features":784,"out_features":10}]}"#,
            "add a flatten layer first",
        ),
        (
            r#"{"input_shape":[784],"layers":[{"type":"transformer"}]}"#,
            "unknown variant `transformer`",
        ),
        (r#"{"input_shape":[784],"layers":[]}"#, "between 1 and"),
        (
            r#"{"input_shape":[1,4,4],"layers":[{"type":"maxpool2d","kernel_size":5}]}"#,
            "larger than the input",
        ),
        (
            r#"{"input_shape":[10],"layers":[{"type":"relu","name":"a"},{"type":"tanh","name":"a"}]}"#,
            "used twice",
        ),
        (
            r#"{"input_shape":[65536,65536],"layers":[{"type":"relu"}]}"#,
            "input_shape must be",
        ),
        (
            r#"{"input_shape":[100000],"layers":[{"type":"linear","in_features":100000,"out_features":100000}]}"#,
            "parameters are supported",
        ),
        // Each factor fits, their product does not: refused, not wrapped around.
        (
            r#"{"input_shape":[1,1,1],"layers":[{"type":"conv2d","in_channels":1,"out_channels":67108864,"kernel_size":[1,1]},
               {"type":"conv2d","in_channels":67108864,"out_channels":67108864,"kernel_size":2049,"padding":1024}]}"#,
            "parameters are supported",
        ),
        (
            r#"{"input_shape":[1,4294967296,4294967296],"layers":[{"type":"relu"}]}"#,
            "more than 2^64",
        ),
    ] {
        let err = Architecture::parse_json(json).unwrap_err();
        assert!(err.0.contains(needle), "{json}: {err}");
    }
}
