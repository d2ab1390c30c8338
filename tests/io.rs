//! File formats: round trips, integer inputs, and clear errors for bad files.

use std::fs::File;

use espinnet::io::{
    Location, preview, read_image, read_stack, write_atomically, write_image, write_stack,
};
use ndarray::{Array2, Array3};
use tempfile::tempdir;

fn stack() -> Array3<f32> {
    Array3::from_shape_fn((3, 5, 7), |(n, y, x)| {
        n as f32 * 100.0 + y as f32 * 10.0 + x as f32 + 0.25
    })
}

fn spec(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

#[test]
fn float32_round_trips() {
    let dir = tempdir().unwrap();
    for name in ["s.tif", "s.tiff", "s.npy", "s.h5:/entry/data/stack"] {
        let p = spec(&dir, name);
        write_stack(&p, stack().view()).unwrap();
        assert_eq!(read_stack(&p).unwrap(), stack(), "{name}");
    }
    let img = Array2::from_shape_fn((4, 6), |(y, x)| (y * 6 + x) as f32 - 3.5);
    for name in ["i.tif", "i.npy", "i.h5:/dx"] {
        let p = spec(&dir, name);
        write_image(&p, &img).unwrap();
        assert_eq!(read_image(&p).unwrap(), img, "{name}");
    }
}

#[test]
fn integer_tiff_pages_are_read() {
    let dir = tempdir().unwrap();
    let p = dir.path().join("u16.tif");
    let mut enc = tiff::encoder::TiffEncoder::new(File::create(&p).unwrap()).unwrap();
    for page in 0..2u16 {
        let data: Vec<u16> = (0..12).map(|i| i * 1000 + page).collect();
        enc.write_image::<tiff::encoder::colortype::Gray16>(4, 3, &data)
            .unwrap();
    }
    drop(enc);
    let s = read_stack(&p.to_string_lossy()).unwrap();
    assert_eq!(s.dim(), (2, 3, 4));
    assert_eq!(s[[1, 2, 3]], 11001.0);

    let p8 = dir.path().join("u8.tif");
    let mut enc = tiff::encoder::TiffEncoder::new(File::create(&p8).unwrap()).unwrap();
    enc.write_image::<tiff::encoder::colortype::Gray8>(2, 2, &[0, 64, 128, 255])
        .unwrap();
    drop(enc);
    assert_eq!(read_image(&p8.to_string_lossy()).unwrap()[[1, 1]], 255.0);
}

#[test]
fn integer_npy_and_hdf5_are_read() {
    let dir = tempdir().unwrap();
    let a =
        ndarray::Array3::<u16>::from_shape_fn((2, 3, 4), |(n, y, x)| (n * 100 + y * 10 + x) as u16);
    let p = dir.path().join("u16.npy");
    ndarray_npy::write_npy(&p, &a).unwrap();
    assert_eq!(read_stack(&p.to_string_lossy()).unwrap()[[1, 2, 3]], 123.0);

    let p = dir.path().join("raw.h5");
    let f = hdf5_metno::File::create(&p).unwrap();
    f.create_group("entry")
        .unwrap()
        .new_dataset_builder()
        .with_data(&a)
        .create("data")
        .unwrap();
    drop(f);
    let s = read_stack(&format!("{}:/entry/data", p.display())).unwrap();
    assert_eq!(s[[1, 2, 3]], 123.0);
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempdir().unwrap();
    let err = |s: &str| read_stack(s).unwrap_err().to_string();
    let missing = spec(&dir, "missing.tif");
    assert!(err(&missing).contains("missing.tif") && err(&missing).contains("no such file"));
    let h5 = spec(&dir, "x.h5");
    write_stack(&format!("{h5}:/data"), stack().view()).unwrap();
    let e = err(&format!("{h5}:/nope"));
    assert!(e.contains("no dataset '/nope'"), "{e}");
    assert!(err(&h5).contains("name the dataset"), "{}", err(&h5));
    assert!(err(&spec(&dir, "x.png")).contains("unknown format"));
    let junk = spec(&dir, "junk.tif");
    std::fs::write(&junk, b"not a tiff at all").unwrap();
    assert!(err(&junk).contains("not a readable TIFF"), "{}", err(&junk));
    let junk = spec(&dir, "junk.npy");
    std::fs::write(&junk, b"\x93NUMPY garbage").unwrap();
    assert!(err(&junk).contains("junk.npy"), "{}", err(&junk));
    // a stack where one image is expected
    let st = spec(&dir, "st.tif");
    write_stack(&st, stack().view()).unwrap();
    assert!(
        read_image(&st)
            .unwrap_err()
            .to_string()
            .contains("3 frames")
    );
    assert_eq!(
        Location::parse("a.nxs:/entry/x")
            .unwrap()
            .dataset
            .as_deref(),
        Some("/entry/x")
    );
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempdir().unwrap();
    let target = dir.path().join("out.tif");
    std::fs::write(&target, b"precious").unwrap();
    let r = write_atomically(&target, |tmp| {
        std::fs::write(tmp, b"half").unwrap();
        Err(espinnet::Error::InvalidArgument("interrupted".into()))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary file left behind"
    );
    // a directory that does not exist is an error, not a panic
    assert!(write_stack(&spec(&dir, "no/such/dir/x.tif"), stack().view()).is_err());
}

#[test]
fn previews_are_pngs_of_the_right_size() {
    let dir = tempdir().unwrap();
    let mut a = Array2::from_shape_fn((20, 30), |(y, x)| (x as f32 - 15.0) * (y as f32));
    a[[0, 0]] = f32::NAN;
    let p = dir.path().join("p.png");
    preview::write_png(&p, &a, preview::Scale::Diverging).unwrap();
    let img = image::open(&p).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (30, 20));
    assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0], "NaN is black");
    assert_ne!(
        img.get_pixel(29, 19),
        img.get_pixel(0, 19),
        "positive and negative differ"
    );
    let m = dir.path().join("m.png");
    let panel = |scale, title: &str| preview::Panel {
        data: &a,
        scale,
        title: title.into(),
    };
    let panels = [
        panel(preview::Scale::Grey, "a"),
        panel(preview::Scale::Sequential, "dx (px)"),
        panel(preview::Scale::Diverging, "b"),
    ];
    preview::write_montage(&m, "caption", &panels, 2, None).unwrap();
    let img = image::open(&m).unwrap().to_rgb8();
    // 2 columns of 30 px, 8 px apart; caption 16 px; 2 rows of title 12 + image 20 + bar
    // and range 22 px, 8 px apart; glyphs 8 px.
    assert_eq!(img.dimensions(), (68, 16 + 2 * 54 + 8));
    let dark = |x0: u32, y0: u32, w: u32, h: u32| {
        (x0..x0 + w)
            .flat_map(|x| (y0..y0 + h).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [0, 0, 0])
            .count()
    };
    assert!(dark(0, 0, 68, 16) > 20, "the caption is drawn");
    assert!(dark(38, 16, 30, 12) > 20, "the second title is drawn");
    assert_ne!(
        img.get_pixel(0, 16 + 12 + 20 + 2 + 4),
        img.get_pixel(29, 16 + 12 + 20 + 2 + 4),
        "a colour bar"
    );
}

#[test]
fn previews_of_large_maps_are_reduced_by_block_means() {
    // 1100 x 600 px: blocks of 3 px bring the longest side under 512; the last row of
    // blocks is partial (1100 = 366 * 3 + 2).
    let mut a = Array2::from_shape_fn((1100, 600), |(y, _)| if y < 550 { 0.0 } else { 1.0 });
    a.slice_mut(ndarray::s![0..3, 0..3]).fill(f32::NAN);
    a[[3, 3]] = f32::NAN; // one NaN in a block of finite values is left out of its mean
    let dir = tempdir().unwrap();
    let p = dir.path().join("p.png");
    preview::write_png(&p, &a, preview::Scale::Grey).unwrap();
    let img = image::open(&p).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (200, 367));
    assert_eq!(
        img.get_pixel(0, 0).0,
        [0, 0, 0],
        "an all-NaN block is black"
    );
    let (top, bottom) = (img.get_pixel(1, 1), img.get_pixel(1, 366));
    assert_eq!(
        top,
        img.get_pixel(100, 100),
        "the block with one NaN has the mean of the rest"
    );
    assert_ne!(top, bottom);
    assert_ne!(
        img.get_pixel(1, 183),
        top,
        "the block across the step is a mixture"
    );
    assert_ne!(img.get_pixel(1, 183), bottom);
    let m = dir.path().join("m.png");
    let panel = preview::Panel {
        data: &a,
        scale: preview::Scale::Sequential,
        title: "t".into(),
    };
    preview::write_montage(&m, "caption", &[panel], 1, Some(1.0)).unwrap();
    assert_eq!(image::open(&m).unwrap().width(), 200);
}

/// Files written by `tests/data/make_hostile_files.py` (tifffile, numpy and hand-made).
fn hostile(name: &str) -> String {
    format!("{}/tests/data/readers/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn tifffile_stacks_of_three_and_four_frames_are_read_as_frames() {
    // tifffile stores a leading 3 or 4 as planar colour samples of one page.
    for (name, n) in [
        ("n3-default.tif", 3),
        ("n4-default.tif", 4),
        ("n3-minisblack.tif", 3),
    ] {
        let s = read_stack(&hostile(name)).unwrap();
        let expected = Array3::from_shape_fn((n, 5, 7), |(k, y, x)| (100 * k + 10 * y + x) as f32);
        assert_eq!(s, expected, "{name}");
    }
    let e = read_stack(&hostile("rgb-chunky.tif"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("interleaves 3 samples per pixel"), "{e}");
}

#[test]
fn float_pages_are_read_in_any_byte_order_and_compression() {
    let expected = Array3::from_shape_fn((5, 5, 7), |(k, y, x)| (100 * k + 10 * y + x) as f32);
    for name in ["be-float32.tif", "be-float32-deflate.tif", "n4-default.tif"] {
        let s = read_stack(&hostile(name)).unwrap();
        let n = s.dim().0;
        assert_eq!(s, expected.slice(ndarray::s![..n, .., ..]), "{name}");
    }
}

#[test]
fn headers_that_claim_more_than_the_file_holds_are_refused_before_allocating() {
    for (name, says) in [
        ("huge-header.tif", "more than the file holds"),
        (
            "deflate-bomb.tif",
            "would decompress to more than 256 times",
        ),
        ("huge-shape.npy", "more than the 4096 bytes of data"),
        (
            "huge-header.npy",
            "header length 4294967295 exceeds the file",
        ),
    ] {
        let e = read_stack(&hostile(name)).unwrap_err().to_string();
        assert!(e.contains(says) && !e.contains('\n'), "{name}: {e}");
    }
}

#[test]
fn an_hdf5_dataspace_larger_than_its_storage_is_refused() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("lie.h5");
    let file = hdf5_metno::File::create(&path).unwrap();
    file.new_dataset::<f32>()
        .shape([1_000_000, 100_000, 100_000])
        .chunk([1, 64, 64])
        .create("data")
        .unwrap();
    drop(file);
    let e = read_stack(&format!("{}:/data", path.display()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("0 bytes stored would decompress"), "{e}");
}

/// libhdf5 dies of SIGSEGV on this damaged file (found by fuzzing): read in a child
/// process, it is an error for the caller, whose process goes on reading other files.
#[cfg(unix)]
#[test]
fn a_file_that_crashes_libhdf5_is_an_error_not_a_crash() {
    let dir = tempdir().unwrap();
    let found = std::fs::read(format!(
        "{}/tests/fuzz/known-crashes/libhdf5-segfault-in-H5F__accum_read.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let bad = dir.path().join("bad.h5");
    std::fs::write(&bad, &found[1..]).unwrap(); // the first byte chose the format
    let e = read_stack(&format!("{}:/data", bad.display())).unwrap_err();
    assert!(
        e.to_string().contains("the HDF5 reader died of signal 11"),
        "{e}"
    );
    // After it, and from several threads at once, good files read as before.
    let good = spec(&dir, "good.h5:/entry/data");
    write_stack(&good, stack().view()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(read_stack(&good).unwrap(), stack()));
        }
    });
    // A missing dataset keeps its own message through the child.
    let e = read_stack(&spec(&dir, "good.h5:/nope")).unwrap_err();
    assert!(e.to_string().contains("no dataset '/nope'"), "{e}");
}

/// Pages sharing one strip: each page claims its full size, so 40 000 pages of a 4 KiB
/// strip claim 160 MB of a 4.6 MB file and are refused at the page that crosses the file's
/// size, before the rest are decoded.
#[test]
fn many_pages_sharing_one_strip_are_refused() {
    let (side, pages) = (64u32, 40_000u32);
    let strip_at = 8u32;
    let mut file = b"II*\0".to_vec();
    let first_ifd = strip_at + side * side;
    file.extend(first_ifd.to_le_bytes());
    file.extend(std::iter::repeat_n(7u8, (side * side) as usize));
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, side),
        (257, 4, side),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, strip_at),
        (277, 3, 1),
        (278, 4, side),
        (279, 4, side * side),
    ];
    let ifd_len = 2 + 12 * entries.len() as u32 + 4;
    for page in 0..pages {
        file.extend((entries.len() as u16).to_le_bytes());
        for (tag, kind, value) in entries {
            file.extend(tag.to_le_bytes());
            file.extend(kind.to_le_bytes());
            file.extend(1u32.to_le_bytes());
            file.extend(value.to_le_bytes());
        }
        let next = if page + 1 < pages {
            first_ifd + (page + 1) * ifd_len
        } else {
            0
        };
        file.extend(next.to_le_bytes());
    }
    let dir = tempdir().unwrap();
    let path = dir.path().join("shared-strip.tif");
    std::fs::write(&path, &file).unwrap();
    let e = read_stack(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("more than the file holds"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}
